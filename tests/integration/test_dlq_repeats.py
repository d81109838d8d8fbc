"""The DLQ as its readers see it (issue 18, item 4): after crashes the DLQ repeats records;
`mutagg dlq list|replay` and `mutagg status` count and replay each source message once, by the
source coordinates in the headers."""

from __future__ import annotations

from confluent_kafka import Producer

from schemas.mutation import REPLAY_HEADER, RawMessage, Rejection
from sinks.acks import dlq_headers
from tests.integration.conftest import mutagg, query, read_topic


def dead_letter(settings, offsets_and_copies: list[tuple[int, int, int]]) -> None:
    """Put `copies` DLQ records for the input message at (partition, offset), as the job does
    when a crash makes it send a rejection again."""
    producer = Producer(settings.kafka_client_config())
    for partition, offset, copies in offsets_and_copies:
        raw = RawMessage(settings.topic_mutations, partition, offset, b"customer:C1", b"{broken %d" % offset,
                         1_700_000_000_000, (("trace", b"t1"),))
        for _ in range(copies):
            producer.produce(settings.topic_dlq, key=raw.key, value=raw.value,
                             headers=dlq_headers(Rejection("INVALID_JSON", "not JSON", raw)))
    assert producer.flush(30) == 0


def test_repeated_dlq_records_are_listed_counted_and_replayed_once(settings):
    dead_letter(settings, [(0, 5, 3), (1, 7, 2), (0, 9, 1)])

    listed = mutagg(settings, "dlq", "list").stdout.splitlines()
    assert len(listed) == 3, listed
    assert f"{settings.topic_mutations}[0]@5  INVALID_JSON" in listed[0] and "(3 DLQ records)" in listed[0]
    assert "DLQ records" not in next(line for line in listed if "@9" in line)

    status = mutagg(settings, "status").stdout
    assert "Dead-letter topic: 3 rejected messages in 6 records (repeat factor 2.0" in status, status

    assert "would re-submit 3 DLQ records" in mutagg(settings, "dlq", "replay", "--dry-run").stdout
    assert "re-submitted 3 DLQ records" in mutagg(settings, "dlq", "replay").stdout
    resubmitted = read_topic(settings, settings.topic_mutations)
    assert sorted(r.value() for r in resubmitted) == [b"{broken 5", b"{broken 7", b"{broken 9"]
    assert all(dict(r.headers())["trace"] == b"t1" and REPLAY_HEADER in dict(r.headers()) for r in resubmitted)
    assert query(settings, "SELECT source_partition, source_offset FROM dlq_replays ORDER BY 1, 2") == [
        (0, 5), (0, 9), (1, 7)]

    # Another crash re-sends a record of an input message already replayed: still done.
    dead_letter(settings, [(0, 5, 1)])
    assert "re-submitted 0 DLQ records" in mutagg(settings, "dlq", "replay").stdout
    assert len(read_topic(settings, settings.topic_mutations)) == 3
