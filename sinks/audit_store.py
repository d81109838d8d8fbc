"""Where audit files live: a local directory or an object store (``s3://``), through
pyarrow's filesystems, and how a file appears there atomically.

- Local: written to ``.<name>.<uuid>.tmp`` in the target directory, fsynced, then
  renamed over the final name (atomic on POSIX, replaces an older copy).
- Object store: the bytes are produced completely first (in memory, or a local
  spool file for big files), then uploaded to the final key; an object becomes
  visible only when its upload completes, so a crash leaves nothing behind.
Readers select ``*.parquet``, so a leftover temporary file is never read.

Credentials come from the environment (the AWS SDK's chain), never from here.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from hashlib import sha256
from typing import BinaryIO
from urllib.parse import parse_qsl, quote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from schemas.audit import COMPRESSION, COMPRESSION_LEVEL, PART_COMPRESSION, SCHEMA_VERSION
from schemas.errors import ConfigError, MutaggError

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
PART_PREFIX = "part-"
COMPACTED_PREFIX = "compacted-"
SUFFIX = ".parquet"
TEMP_SUFFIX = ".tmp"
_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SAFE_BATCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$")
_SPOOL_BYTES = 64 << 20


class AuditError(MutaggError):
    """The audit data set could not be written or compacted as asked."""


def partition_value(entity_type: str | None) -> str:
    """The ``entity_type=`` path segment: the name itself when it is a plain name,
    otherwise percent-encoded (decoded again by DuckDB, Polars and pyarrow). The export
    only passes registry names and ``_invalid`` (sinks/audit_rows.py `_partition_type`);
    the encoding stays as a guard for any other caller."""
    if entity_type is None:
        return HIVE_NULL
    if _PLAIN.match(entity_type) and entity_type != HIVE_NULL:
        return entity_type
    encoded = quote(entity_type, safe="").replace(".", "%2E").replace("_", "%5F")
    if len(encoded) > 200:  # only a rejected message can carry such a type; keep paths short
        return "%5Flong-" + sha256(entity_type.encode()).hexdigest()[:24]
    return encoded


def part_name(batch_id: str) -> str:
    """Deterministic file name of one batch's rows in one partition."""
    if _SAFE_BATCH.match(batch_id):
        return f"{PART_PREFIX}{batch_id}{SUFFIX}"
    return f"{PART_PREFIX}h{sha256(batch_id.encode()).hexdigest()[:32]}{SUFFIX}"


def compacted_name(sources: list[str]) -> str:
    """Name of the file that replaces `sources`: it encodes the set it covers."""
    digest = sha256("\n".join(sorted(sources)).encode()).hexdigest()[:20]
    return f"{COMPACTED_PREFIX}{digest}{SUFFIX}"


@dataclass(frozen=True, slots=True)
class AuditFile:
    path: str
    name: str
    partition: str
    """Directory of the file (``<root>/<data set>/date=.../entity_type=...``)."""
    modified: datetime | None = None

    @property
    def is_part(self) -> bool:
        return self.name.startswith(PART_PREFIX) and self.name.endswith(SUFFIX)

    @property
    def is_compacted(self) -> bool:
        return self.name.startswith(COMPACTED_PREFIX) and self.name.endswith(SUFFIX)

    @property
    def is_temp(self) -> bool:
        return self.name.startswith(".") and self.name.endswith(TEMP_SUFFIX)


def _s3(uri: str, endpoint_override: str | None) -> tuple[pafs.FileSystem, str]:
    parts = urlsplit(uri)
    options = dict(parse_qsl(parts.query))
    endpoint = endpoint_override or options.get("endpoint_override")
    scheme = options.get("scheme", "https")
    if endpoint and "://" in endpoint:
        scheme, endpoint = endpoint.split("://", 1)
    filesystem = pafs.S3FileSystem(
        endpoint_override=endpoint or None,
        scheme=scheme,
        region=options.get("region"),
        connect_timeout=10,
        request_timeout=60,
    )
    return filesystem, f"{parts.netloc}{parts.path}".rstrip("/")


class AuditStore:
    """The audit root: ``<uri>/<data set>/date=.../entity_type=.../<file>.parquet``."""

    def __init__(self, uri: str, endpoint_override: str | None = None):
        if not uri:
            raise ConfigError("the audit URI is empty (set MUTAGG_AUDIT_URI)")
        self.uri = uri
        if uri.startswith("s3://"):
            self.fs, self.root = _s3(uri, endpoint_override)
        elif "://" in uri:
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.root = self.root.rstrip("/")
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def partition_dir(self, dataset: str, day: date, entity_type: str | None) -> str:
        return f"{self.root}/{dataset}/date={day.isoformat()}/entity_type={partition_value(entity_type)}"

    def day_dir(self, dataset: str, day: date) -> str:
        return f"{self.root}/{dataset}/date={day.isoformat()}"

    # -- writing ---------------------------------------------------------------------------

    @contextmanager
    def _atomic(self, path: str) -> Iterator[BinaryIO]:
        """Yield a writable file; `path` appears whole when the block succeeds, not at all otherwise."""
        directory, name = path.rsplit("/", 1)
        if self.local:
            os.makedirs(directory, exist_ok=True)
            temp = f"{directory}/.{name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}"
            try:
                with open(temp, "wb") as handle:
                    yield handle
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, path)
            except BaseException:
                if os.path.exists(temp):
                    os.unlink(temp)
                raise
            descriptor = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            return
        # Object store: spool everything first, so a failure while producing the bytes
        # never reaches the store; the object appears when its upload completes.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            yield spool  # type: ignore[misc]
            spool.seek(0)
            with self.fs.open_output_stream(path) as out:
                shutil.copyfileobj(spool, out, 8 << 20)

    def write_parquet(
        self,
        path: str,
        write: Callable[[pq.ParquetWriter], int],
        schema: pa.Schema,
        metadata: dict[str, str],
        compression: str = COMPRESSION,
    ) -> int:
        """Atomically write one Parquet file whose rows `write` adds; return the row count."""
        schema = schema.with_metadata({**(schema.metadata or {}), **_kv(metadata)})
        with self._atomic(path) as handle:
            writer = pq.ParquetWriter(
                handle, schema, compression=compression,
                compression_level=COMPRESSION_LEVEL if compression == COMPRESSION else None,
                write_statistics=True,
            )
            try:
                rows = write(writer)
            finally:
                writer.close()
        return rows

    def write_table(self, path: str, table: pa.Table, metadata: dict[str, str]) -> None:
        """Atomically write `table` as one part file (`PART_COMPRESSION`)."""

        def write(writer: pq.ParquetWriter) -> int:
            writer.write_table(table, row_group_size=128 * 1024)
            return table.num_rows

        self.write_parquet(path, write, table.schema, metadata, PART_COMPRESSION)

    def delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

    # -- reading ---------------------------------------------------------------------------

    def list_files(self, directory: str) -> list[AuditFile]:
        """Every file below `directory` (recursively); empty if it does not exist."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
        except FileNotFoundError:
            return []
        files = []
        for info in infos:
            if info.type == pafs.FileType.File:
                parent, name = info.path.rsplit("/", 1)
                files.append(AuditFile(info.path, name, parent, info.mtime))
        return sorted(files, key=lambda f: f.path)

    def list_children(self, directory: str) -> list[str]:
        """Names of the sub-directories of `directory`."""
        infos = self.fs.get_file_info(pafs.FileSelector(directory, recursive=False, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def file_metadata(self, path: str) -> dict[str, str]:
        with self.fs.open_input_file(path) as handle:
            raw = pq.ParquetFile(handle).schema_arrow.metadata or {}
        return {k.decode(): v.decode() for k, v in raw.items() if k.startswith(b"mutagg.")}

    def row_count(self, path: str) -> int:
        with self.fs.open_input_file(path) as handle:
            return pq.ParquetFile(handle).metadata.num_rows

    def read_table(self, path: str, schema: pa.Schema) -> pa.Table:
        with self.fs.open_input_file(path) as handle:
            return pq.read_table(handle, schema=schema)


def _kv(metadata: dict[str, str]) -> dict[str, str]:
    return {"mutagg.schema_version": SCHEMA_VERSION, **{f"mutagg.{k}": v for k, v in metadata.items()}}
