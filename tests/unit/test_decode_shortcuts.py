"""The decoder's shortcuts decide exactly as the general checks they stand in front of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from types import SimpleNamespace

import orjson
import pytest
from confluent_kafka import KafkaError, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.mutation import (
    FIELDS,
    MAX_FUTURE_SKEW,
    OPTIONAL_FIELDS,
    RawMessage,
    Rejection,
    _check_fields,
    _check_time_range,
    _Invalid,
    decode,
)
from schemas.registry import ATTRIBUTE_TYPES
from schemas.values import COERCERS, MAX_DECIMAL_DIGITS, CoercionError, _parse_any_rfc3339, coerce, parse_rfc3339
from sources.kafka import HELD_PAUSE, PAUSE, TRICKLE, _Partition
from tests.unit.test_decode import REGISTRY, VALID


def outcome(function, *args):
    """What a call returns or raises, comparable across implementations."""
    try:
        result = function(*args)
    except (_Invalid, CoercionError) as exc:
        return ("rejected", str(exc))
    except (ValueError, OverflowError) as exc:
        return ("raised", type(exc).__name__)
    return ("value", repr(result))


timestamps = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    st.text("0123456789", min_size=4, max_size=4),
    st.sampled_from(["01", "02", "09", "10", "12", "13", "00", "1\u0661"]),
    st.sampled_from(["01", "28", "29", "30", "31", "32", "00"]),
    st.sampled_from(["T", "t", " ", "x"]),
    st.sampled_from(["00", "09", "23", "24", "99"]),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60", "61"]),
    st.sampled_from(["", "."]).flatmap(lambda dot: st.text("0123456789", max_size=9).map(lambda f: dot + f)),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+01:00", "-05:30", "+14:00", "+24:00", "+99:99", "", "Z\n"]),
)


@settings(max_examples=2000)
@given(timestamps)
def test_rfc3339_shortcut_parses_as_the_general_parser(text):
    assert outcome(parse_rfc3339, text) == outcome(_parse_any_rfc3339, text)


@pytest.mark.parametrize("text", ["2026-11-26T08:00:00.123456Z", "2026-11-26T08:00:00+00:00", "2026-11-26T08:00:00Z"])
def test_rfc3339_shortcut_keeps_utc_as_utc(text):
    assert parse_rfc3339(text).tzinfo is UTC
    assert outcome(parse_rfc3339, text) == outcome(_parse_any_rfc3339, text)


def original_check_time_range(timestamp: datetime, kafka_timestamp_ms: int) -> None:
    """_check_time_range as it was before the whole-days shortcut."""
    if timestamp < datetime(1970, 1, 1, tzinfo=UTC):
        raise _Invalid("TIMESTAMP_OUT_OF_RANGE", "timestamp is before 1970")
    if kafka_timestamp_ms > 0:
        broker_time = datetime.fromtimestamp(kafka_timestamp_ms / 1000, tz=UTC)
        if timestamp - broker_time > MAX_FUTURE_SKEW:
            raise _Invalid("TIMESTAMP_OUT_OF_RANGE", "timestamp is more than a year after the Kafka timestamp")


kafka_ms = st.one_of(
    st.integers(-(10**13), 4 * 10**12),
    st.integers(1_700_000_000_000, 1_900_000_000_000),
    st.integers(4_102_444_700_000, 4_102_444_900_000),
    st.integers(253_402_000_000_000, 253_403_000_000_000),  # around year 10000: fromtimestamp fails
)


@settings(max_examples=3000)
@given(kafka_ms, st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000), st.sampled_from([0, 1, -1, 14 * 60]))
def test_time_range_shortcut_decides_as_the_exact_check_near_the_limit(ms, off_us, offset_minutes):
    try:
        limit = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=max(ms, 0)) + MAX_FUTURE_SKEW
        timestamp = (limit + timedelta(microseconds=off_us)).astimezone(timezone(timedelta(minutes=offset_minutes)))
    except OverflowError:
        return  # beyond year 9999: no such timestamp parses
    assert outcome(_check_time_range, timestamp, ms) == outcome(original_check_time_range, timestamp, ms)


@settings(max_examples=1000)
@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-11))])), kafka_ms)
def test_time_range_shortcut_decides_as_the_exact_check_anywhere(timestamp, ms):
    assert outcome(_check_time_range, timestamp, ms) == outcome(original_check_time_range, timestamp, ms)


def original_decimal(value):
    """The decimal coercion as it was before the short-text shortcut."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise CoercionError("expected a decimal number")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise CoercionError("expected a decimal number") from exc
    if (
        not number.is_finite()
        or len(number.as_tuple().digits) > MAX_DECIMAL_DIGITS
        or not -1000 <= number.adjusted() <= 1000
    ):
        raise CoercionError("decimal is not finite, too long, or out of range")
    return number


decimal_inputs = st.one_of(
    st.text("0123456789.eE+-_ \u0661", max_size=70),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**70), 10**70),
    st.floats(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=2000)
@given(decimal_inputs)
def test_decimal_shortcut_coerces_as_before(value):
    assert outcome(coerce, "decimal", value) == outcome(original_decimal, value)


def test_every_registry_type_has_a_coercer():
    assert set(COERCERS) == ATTRIBUTE_TYPES


@settings(max_examples=500)
@given(st.sets(st.sampled_from([*FIELDS, *OPTIONAL_FIELDS, "surprise", "Id"])))
def test_field_gate_rejects_exactly_what_the_field_checks_reject(names):
    document = {name: VALID.get(name, 1) for name in names}
    try:
        _check_fields(document)
        expected = None
    except _Invalid as invalid:
        expected = (invalid.code, invalid.message)
    result = decode(RawMessage("t", 0, 0, None, orjson.dumps(document), 1_790_000_000_000), REGISTRY)
    rejected = isinstance(result, Rejection) and result.code in ("MISSING_FIELD", "UNKNOWN_FIELD")
    found = (result.code, result.message) if rejected else None
    assert found == expected


def partition_over(records: list, partition: int, offset: int, stop_at_end: bool) -> _Partition:
    """A source partition whose consumer returns `records` on every poll (no broker)."""
    def consume(count: int, timeout: float) -> list:
        assert timeout == 0, "the poll must not block the worker"
        return records

    source = _Partition.__new__(_Partition)
    source.__dict__.update(
        _should_stop=lambda: False, _paused=lambda: False, _watch=SimpleNamespace(raise_if_failed=lambda: None),
        _consumer=SimpleNamespace(consume=consume), _topic="edge.mutations",
        _partition=partition, _offset=offset, _batch_size=100, _stop_at_end=stop_at_end, _deadline_s=30.0,
        _at_end=False, _last_heartbeat_ms=0, _last_healthy=0.0, _slow=False,
    )
    return source


def test_kafka_partition_turns_records_into_raw_messages():
    records = [
        Message(topic="edge.mutations", partition=3, offset=10, key=b"k", value=b"v", timestamp=(1, 1_790_000_000_000)),
        Message(topic="edge.mutations", partition=3, offset=11, key=None, value=None, timestamp=(1, 5),
                headers=[("mutagg-replay-of", b"dlq:0:1")]),
        Message(topic="edge.mutations", partition=3, offset=12, error=KafkaError(KafkaError._PARTITION_EOF)),
    ]
    partition = partition_over(records, partition=3, offset=0, stop_at_end=True)
    [chunk] = partition.next_batch()
    assert chunk.messages == [
        RawMessage("edge.mutations", 3, 10, b"k", b"v", 1_790_000_000_000, ()),
        RawMessage("edge.mutations", 3, 11, None, None, 5, (("mutagg-replay-of", b"dlq:0:1"),)),
    ]
    assert partition.snapshot() == 12 and partition._at_end and partition._last_healthy > 0


def test_records_after_an_end_of_partition_event_in_one_poll_are_kept():
    """A tailing consumer gets [EOF, newly appended records] in one poll: none may be dropped."""
    records = [
        Message(topic="edge.mutations", partition=0, offset=5, error=KafkaError(KafkaError._PARTITION_EOF)),
        Message(topic="edge.mutations", partition=0, offset=5, key=b"k", value=b"a", timestamp=(1, 7)),
        Message(topic="edge.mutations", partition=0, offset=6, key=b"k", value=b"b", timestamp=(1, 8)),
    ]
    partition = partition_over(records, partition=0, offset=5, stop_at_end=False)
    [chunk] = partition.next_batch()
    assert [m.offset for m in chunk.messages] == [5, 6]
    assert partition.snapshot() == 7 and not partition._at_end


def test_a_partition_that_only_trickles_is_polled_again_later_and_a_backlog_at_once():
    def polled(count: int) -> _Partition:
        records = [Message(topic="edge.mutations", partition=0, offset=i, key=None, value=b"v", timestamp=(1, 5))
                   for i in range(count)]
        partition = partition_over(records, partition=0, offset=0, stop_at_end=False)
        partition.next_batch()
        return partition

    for count in (0, 1, TRICKLE - 1):
        awake = polled(count).next_awake()
        assert awake is not None and timedelta(0) < awake - datetime.now(UTC) <= PAUSE
    assert polled(TRICKLE).next_awake() is None


def test_a_held_partition_reads_nothing_and_is_asked_again_after_the_longer_pause():
    """While the apply step holds a batch of the standard topic (the priority lane is read), its
    partitions read nothing and wake the worker only every HELD_PAUSE; released, a backlog reads at once."""
    records = [Message(topic="edge.mutations", partition=0, offset=i, key=None, value=b"v", timestamp=(1, 5))
               for i in range(TRICKLE)]
    held = [True]
    partition = partition_over(records, partition=0, offset=0, stop_at_end=False)
    partition._paused = lambda: held[0]
    assert partition.next_batch() == [] and partition.snapshot() == 0
    awake = partition.next_awake()
    assert awake is not None and PAUSE < awake - datetime.now(UTC) <= HELD_PAUSE
    held[0] = False
    [chunk] = partition.next_batch()
    assert len(chunk.messages) == TRICKLE and partition.next_awake() is None
