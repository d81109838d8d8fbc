"""Typed errors. Each carries what an operator needs to act on it."""

from __future__ import annotations


class MutaggError(Exception):
    """Base of every error this project raises on purpose."""


class RegistryError(MutaggError):
    """The entity registry is missing, malformed, or names something unknown."""


class ConfigError(MutaggError):
    """Settings are missing or invalid."""


class CoreMissing(MutaggError):
    """The compiled core (core/, Python module `mutagg_core`) is not installed: `make` builds it."""


class ValidationError(MutaggError):
    """A message could not be accepted as a mutation."""

    def __init__(self, code: str, message: str, mutation_id: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.mutation_id = mutation_id


class ServiceUnavailable(MutaggError):
    """Kafka or PostgreSQL stayed unreachable past the configured deadline."""


class DatabaseBehind(MutaggError):
    """The database holds fewer of this job's commits than the job saw commit (a promoted
    asynchronous standby lost them): the job stops rather than build on it, and its restart
    resumes from the offsets the database holds (sinks/fence.py)."""


class StrategyError(MutaggError):
    """A custom conflict strategy raised, or returned no valid resolution. It is data, not a
    bug of the job: its mutation is FAILED (`STRATEGY_ERROR`, `detail` in the ledger)."""

    def __init__(self, mutation_id: str, detail: str):
        super().__init__(f"mutation {mutation_id}: {detail}")
        self.mutation_id = mutation_id
        self.detail = detail


class BatchFailed(MutaggError):
    """Deciding or committing a batch failed for a reason that is neither its data nor a
    transient outage (a bug): nothing of it is committed, and the job stops."""

    def __init__(self, batch_id: str, error: BaseException, mutation_id: str | None = None):
        where = f"batch {batch_id}" + (f", mutation {mutation_id}" if mutation_id else "")
        super().__init__(f"{where}: {type(error).__name__}: {error}"[:2000])
        self.batch_id = batch_id
        self.mutation_id = mutation_id
        self.error = error


class InputGap(MutaggError):
    """The next offset of an input partition is no longer on the broker (retention deleted it
    while the job was stopped or behind): the lost range is recorded in `input_gaps`, and the
    job stops unless the operator chose to continue from the earliest offset still there
    (`MUTAGG_ON_INPUT_GAP=skip`)."""

    def __init__(self, message: str, topic: str, partition: int, from_offset: int, to_offset: int):
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.from_offset = from_offset
        self.to_offset = to_offset


class ClaimLost(MutaggError):
    """A shard's transaction met ids whose first copy another partition claimed first (the
    partitioned commit, operators/shard_view.py): it wrote nothing; the shard sets its copies
    aside and sequences the batch again. Not a failure: the job carries on."""

    def __init__(self, mutation_ids: set[str]):
        super().__init__(f"{len(mutation_ids)} ids claimed first by another partition's copy")
        self.mutation_ids = mutation_ids
