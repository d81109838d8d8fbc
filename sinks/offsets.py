"""Source offsets recorded with each batch: where to resume without recovery data."""

from __future__ import annotations

from mutagg.settings import Settings
from sinks.database import connect


def stored_offsets(settings: Settings, topic: str) -> dict[int, int]:
    with connect(settings.database_url, settings.service_deadline_s, "mutagg-offsets") as connection:
        rows = connection.execute(
            "SELECT kafka_partition, next_offset FROM source_offsets WHERE kafka_topic = %s", (topic,)
        ).fetchall()
    return {partition: offset for partition, offset in rows}
