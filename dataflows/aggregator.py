"""The whole flow on one screen:

    Kafka chunks -> decode -> route to the committer (or to a partition's shard) -> window,
    sequence, decide, commit, acknowledge -> batch reports
    (tailing runs: a heartbeat input on every worker, for the liveness probe)
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows import steps
from dataflows.apply import ApplyLogic
from dataflows.runtime import Runtime
from dataflows.shards import shard_key, shard_of
from mutagg.heartbeat import HEARTBEAT
from operators.decode import decode_chunk, event_time_cap
from schemas.signature import Verifier
from sinks.commit_pipeline import BatchReport
from sinks.gaps import InputGapPolicy
from sinks.offsets import stored_offsets
from sources.heartbeat import HeartbeatSource, NoOutput
from sources.kafka import TRICKLE, Chunk, MutationSource


class _Discard(StatelessSinkPartition[BatchReport]):
    def write_batch(self, items: list[BatchReport]) -> None:
        """Reports are already logged and counted by the apply step."""


class ReportSink(DynamicSink[BatchReport]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard()


def read_size(runtime: Runtime, topic: str) -> int:
    """Records per poll of a partition of `topic`. With the priority lane read, a standard
    partition reads at most a batch per poll: the standard topic pauses once the apply step holds
    a batch of it, so what it reads ahead stays within a poll of each partition (README "Priority
    lane"). Smaller polls cost the drain more than they save (BENCHMARKS.md, session 14)."""
    settings = runtime.settings
    if settings.shards > 1:
        # A shard's poll of its partitions reads about a batch: what it reads before a flush then commits
        # in that flush's first part, and is never published as held (operators/shard_view.py).
        per_shard = -(-len(runtime.input_partitions) // settings.shards)
        return min(settings.read_chunk, max(TRICKLE, settings.batch_size // per_shard))
    if runtime.lane is None or topic == runtime.lane:
        return settings.read_chunk
    return min(settings.read_chunk, settings.batch_size)


def route_key(shards: int):
    """The apply step's key for a chunk: one committer sees every partition, or each shard of
    the partitions has its own (settings.shards; placed on worker shard % workers: dataflows/shards.py),
    which shares dependencies and event time with the others through the database."""
    if shards == 1:
        return lambda _chunk: "committer"
    keys = [shard_key(index, shards) for index in range(shards)]
    return lambda chunk: keys[shard_of(chunk.partition, shards)]


def build_flow(runtime: Runtime, stop_at_end: bool) -> Dataflow:
    settings, registry = runtime.settings, runtime.registry
    flow = Dataflow(steps.FLOW_ID)
    source = MutationSource(
        settings.kafka_client_config(),
        lambda: runtime.input_partitions,  # the standard topic's, and the priority lane's if it exists
        batch_size=settings.read_chunk,
        stop_at_end=stop_at_end,
        deadline_s=settings.service_deadline_s,
        stored_offsets=lambda topic: stored_offsets(settings, topic),
        on_gap=InputGapPolicy(settings, runtime.metrics),
        should_stop=runtime.stopping.is_set,
        standard=settings.topic_mutations,
        # While lane mutations are read, the standard topic pauses once a batch of it is held (README "Priority lane").
        paused=lambda topic: runtime.standard_paused.is_set() and topic != runtime.lane,
        read_size=lambda topic: read_size(runtime, topic),
        shards=settings.shards,  # each partition is read on the worker of its shard (sources/worker_mark.py)
    )
    op.input(steps.WORKER_MARK, flow, source.worker_mark)  # before the input: it tells it its worker
    chunks = op.input(steps.INPUT, flow, source)
    master_key = settings.edge_master_key()
    verifier = Verifier(master_key) if master_key is not None else None  # DESIGN section 2, "Edge signature"

    def decode(chunk: Chunk):
        return decode_chunk(
            chunk.topic, chunk.partition, chunk.messages, registry, settings.max_message_bytes, chunk.caught_up_ms,
            event_time_cap(chunk.read_ms, settings.event_time_lead_s), verifier,
        )

    decoded = op.map(steps.DECODE, chunks, decode)
    routed = op.key_on(steps.ROUTE, decoded, route_key(settings.shards))
    reports = op.stateful_batch(steps.APPLY, routed, lambda state: ApplyLogic(runtime, state))
    op.output(steps.REPORT, reports, ReportSink())
    if not stop_at_end:  # liveness (mutagg/heartbeat.py); a drain beats from its input polls instead
        beats = op.input(steps.HEARTBEAT, flow, HeartbeatSource(HEARTBEAT, runtime.stopping.is_set))
        op.output(steps.HEARTBEAT_END, beats, NoOutput())
    return flow
