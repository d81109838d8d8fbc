"""Input offsets lost to retention before the job read them (issue 18, item 0).

A lost range is never skipped silently: it is recorded in `input_gaps` (and counted in
`mutagg_input_gap_messages_total`) before anything after it is read, and the job stops with
`InputGap` (exit 5) unless the operator chose `MUTAGG_ON_INPUT_GAP=skip`; then it reads on
from the earliest offset still on the broker.
"""

from __future__ import annotations

import logging

from mutagg.metrics import JobMetrics
from mutagg.settings import Settings
from schemas.errors import InputGap
from sinks.database import connect, retry_transient
from sources.kafka import LostRange

log = logging.getLogger(__name__)

_RECORD = (
    "INSERT INTO input_gaps (kafka_topic, kafka_partition, from_offset, to_offset, continued) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kafka_topic, kafka_partition, from_offset) DO UPDATE SET "
    "to_offset = GREATEST(input_gaps.to_offset, EXCLUDED.to_offset), "
    "continued = input_gaps.continued OR EXCLUDED.continued, last_detected_at = clock_timestamp()"
)


def record_gap(settings: Settings, lost: LostRange, continued: bool) -> None:
    """Insert (or widen) the row of `lost`; a restart that finds the same gap again updates it."""

    def write() -> None:
        with connect(settings.database_url, settings.service_deadline_s, "mutagg-gaps") as connection:
            connection.execute(
                _RECORD, (lost.topic, lost.partition, lost.from_offset, lost.to_offset, continued))

    retry_transient(write, settings.service_deadline_s, "PostgreSQL")


class InputGapPolicy:
    """The source's gap handler: record, count, log; then raise (`stop`) or return (`skip`)."""

    def __init__(self, settings: Settings, metrics: JobMetrics):
        self.settings = settings
        self.metrics = metrics

    def __call__(self, lost: LostRange) -> None:
        skip = self.settings.on_input_gap == "skip"
        record_gap(self.settings, lost, continued=skip)
        self.metrics.count_input_gap(lost.topic, lost.partition, lost.messages)
        where = f"{lost.topic}[{lost.partition}]"
        lost_text = f"offsets {lost.from_offset}..{lost.to_offset - 1} ({lost.messages} messages)"
        log.error(
            "input gap: offsets no longer on the broker", extra={
                "topic": lost.topic, "partition": lost.partition, "from_offset": lost.from_offset,
                "to_offset": lost.to_offset, "messages": lost.messages, "on_input_gap": self.settings.on_input_gap})
        if not skip:
            raise InputGap(
                f"input gap in {where}: {lost_text} were deleted from the broker before the job read them "
                "(recorded in input_gaps); to continue from the earliest offset still there, run again "
                "with MUTAGG_ON_INPUT_GAP=skip",
                lost.topic, lost.partition, lost.from_offset, lost.to_offset)
        log.warning("input gap skipped: reading on from the earliest offset on the broker",
                    extra={"topic": lost.topic, "partition": lost.partition, "offset": lost.to_offset})
