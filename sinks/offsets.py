"""Source offsets recorded with each batch: where to resume without recovery data."""

from __future__ import annotations

from mutagg.settings import Settings
from sinks import ledger
from sinks.database import connect, retry_transient
from sinks.postgres import PostgresCommitter


def stored_offsets(settings: Settings, topic: str) -> dict[int, int]:
    with connect(settings.database_url, settings.service_deadline_s, "mutagg-offsets") as connection:
        rows = connection.execute(
            "SELECT kafka_partition, next_offset FROM source_offsets WHERE kafka_topic = %s", (topic,)
        ).fetchall()
    return {partition: offset for partition, offset in rows}


def record_offsets(committer: PostgresCommitter, offsets: dict[tuple[str, int], int], label: str) -> None:
    """Record resume offsets on their own, outside any batch (e.g. once everything read is
    acknowledged); `label` stands in the batch id column."""

    def write() -> None:
        with committer.connection.transaction(), committer.connection.cursor() as cursor:
            ledger.record_offsets(cursor, offsets, label)

    retry_transient(write, committer.deadline_s, drop=committer.drop_connection)
