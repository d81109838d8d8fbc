"""The decide-step prototypes of issue 22 (prototypes/, core/) decide exactly as today's
engine: the same ledger, conflict and entity rows and acknowledgements, chunk by chunk, on a
small generated workload and on hand-made messages covering every validation reason code.

The Rust core is tested when built (`make` builds it, with cargo; see
BENCHMARKS.md "Decide-step prototypes (issue 22)"); otherwise its tests are skipped."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.decide_ab import TOPIC, workload_chunks
from mutagg.settings import DEFAULT_REGISTRY
from operators.strategies import CUSTOM_STRATEGIES
from prototypes import polars_decide, rust_core
from prototypes.agreement import baseline_tables, differences
from prototypes.baseline import PythonEngine, WaitsOutsideTheChunk
from schemas.mutation import RawMessage
from schemas.registry import load_registry

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
needs_core = pytest.mark.skipif(
    not rust_core.AVAILABLE, reason="the Rust core (core/) is not built: run `make` (needs cargo)"
)
KAFKA_MS = 1_764_144_000_000  # 2025-11-26T08:00:00Z


def mutation(serial: int, **changes) -> dict:
    document = {
        "id": f"h-{serial}", "edge_node_id": "shop-01", "entity_type": "customer", "entity_id": "C1",
        "operation_type": "UPDATE", "attributes": {"name": "Ada"}, "base_version": 1,
        "timestamp": "2025-11-26T07:59:00Z", "priority": 5, "dependencies": [],
    }
    document.update(changes)
    return document


def raw(offset: int, value: bytes | dict | None, key: bytes | None = b"customer:C1", kafka_ms: int = KAFKA_MS
        ) -> RawMessage:
    if isinstance(value, dict):
        value = orjson.dumps(value)
    return RawMessage(TOPIC, 0, offset, key, value, kafka_ms + offset)


def hand_made() -> list[RawMessage]:
    """Valid messages in the shapes the core renders itself, then one of each rejection."""
    created = mutation(0, operation_type="CREATE", attributes={
        "name": 'Zoë "the" \\ admin', "credit_limit": "007.50", "balance": 12, "customer_since": "2024-02-29",
        "email": None, "notes": "call"})
    documents: list[tuple[object, bytes | None]] = [
        (created, b"customer:C1"),
        (mutation(1, attributes={"balance": "-2.25", "credit_limit": "100"}), b"customer:C1"),
        (mutation(2, edge_node_id="van-02", base_version=0, attributes={"name": "Bo", "notes": "late"}),
         b"customer:C1"),
        (mutation(3, entity_type="stock_level", entity_id="WH1/A", operation_type="CREATE",
                  attributes={"quantity": "12", "reorder_point": 5.0, "last_counted_at": "2025-11-26T09:30:00.5+02:00",
                              "warehouse": "WH1", "sku": "A"}), b"stock_level:WH1/A"),
        (mutation(4, entity_type="article", entity_id="A", operation_type="CREATE",
                  attributes={"price": "9.99", "active": True, "weight_kg": 5, "tags": ["x", {"k": [1, None]}],
                              "max_discount_pct": "10"},
                  timestamp="2025-11-26T08:30:00.123456Z"), b"article:A"),
        (mutation(5, entity_type="article", entity_id="A", edge_node_id="van-02", base_version=0,
                  attributes={"max_discount_pct": "20"}), b"article:A"),
        (mutation(6, operation_type="DELETE", attributes={}, base_version=1), b"customer:C1"),
        (None, b"customer:C1"),
        (b"\xff\xfe", b"customer:C1"),
        (b"{not json", b"customer:C1"),
        (b"[1, 2]", b"customer:C1"),
        ({k: v for k, v in mutation(10).items() if k != "priority"}, b"customer:C1"),
        ({**mutation(11), "colour": "red"}, b"customer:C1"),
        (mutation(12, id="x" * 129), b"customer:C1"),
        (mutation(13, entity_type="robot"), b"robot:C1"),
        (mutation(14, operation_type="PATCH"), b"customer:C1"),
        (mutation(15, base_version=-1), b"customer:C1"),
        (mutation(16, priority=True), b"customer:C1"),
        (mutation(17, timestamp="2025-13-01T00:00:00Z"), b"customer:C1"),
        (mutation(18, timestamp="1969-12-31T23:59:59Z"), b"customer:C1"),
        (mutation(19, timestamp="2027-12-01T00:00:00Z"), b"customer:C1"),
        (mutation(20, tenant_id=5), b"customer:C1"),
        (mutation(21, dependencies=["h-21"]), b"customer:C1"),
        (mutation(22, dependencies="h-1"), b"customer:C1"),
        (mutation(23, attributes=["name"]), b"customer:C1"),
        (mutation(24, operation_type="DELETE"), b"customer:C1"),
        (mutation(25, attributes={"shoe_size": 44}), b"customer:C1"),
        (mutation(26, attributes={"credit_limit": "lots"}), b"customer:C1"),
        (mutation(27, attributes={"balance": None}), b"customer:C1"),
        (mutation(28, attributes={"name": "a\x00b"}), b"customer:C1"),
        (mutation(29, attributes={"customer_since": "2025-02-30"}), b"customer:C1"),
        (mutation(30), b"customer:C2"),
        (mutation(1, attributes={"name": "a copy, whatever its content"}), b"customer:C1"),
        (mutation(12, id="x" * 129), b"customer:C1"),
    ]
    messages = [raw(offset, value, key) for offset, (value, key) in enumerate(documents)]
    messages.append(raw(len(messages), mutation(31), kafka_ms=253_402_300_800_000))
    return messages


def run_both(chunks: list[list[RawMessage]], max_bytes: int = 1 << 20) -> None:
    python = PythonEngine(REGISTRY, CUSTOM_STRATEGIES, max_bytes=max_bytes)
    rust = rust_core.RustEngine(REGISTRY, CUSTOM_STRATEGIES, max_bytes=max_bytes)
    for number, raws in enumerate(chunks):
        expected = baseline_tables(*python.decide_chunk(TOPIC, 0, raws, f"b{number}"))
        actual = rust.decide_chunk(TOPIC, 0, raws, f"b{number}")
        assert actual is not None, f"chunk {number} fell back to the Python engine"
        assert differences(expected, actual) == [], f"chunk {number}"
    assert rust.code_mismatches == 0


@needs_core
def test_rust_core_decides_the_workload_as_the_python_engine():
    run_both(workload_chunks(6000, 1500, seed=3))


@needs_core
def test_rust_core_gives_every_reason_code_of_the_python_decoder():
    messages = hand_made()
    long = raw(len(messages), mutation(40, attributes={"name": "n" * 700}))
    run_both([messages[:7], [*messages[7:], long]], max_bytes=700)


@needs_core
@pytest.mark.parametrize("value", [
    mutation(50, attributes={"credit_limit": "1e3"}),  # a decimal Python reads, in a form the core leaves to it
    mutation(51, timestamp="2025-11-26t07:59:00z"),  # an RFC 3339 shape beyond the common ones
])
def test_rust_core_leaves_what_it_cannot_render_to_the_python_engine(value):
    rust = rust_core.RustEngine(REGISTRY, CUSTOM_STRATEGIES)
    assert rust.decide_chunk(TOPIC, 0, [raw(0, mutation(49, operation_type="CREATE")), raw(1, value)], "b0") is None
    assert rust.fallbacks == 1
    # Nothing of the refused chunk stayed: the CREATE is decided anew, as by a fresh engine.
    python = PythonEngine(REGISTRY, CUSTOM_STRATEGIES)
    chunk = [raw(0, mutation(49, operation_type="CREATE"))]
    expected = baseline_tables(*python.decide_chunk(TOPIC, 0, chunk, "b1"))
    assert differences(expected, rust.decide_chunk(TOPIC, 0, chunk, "b1")) == []


def test_polars_path_decides_its_entity_type_as_the_python_engine():
    python, vectorised = PythonEngine(REGISTRY, CUSTOM_STRATEGIES), polars_decide.PolarsEngine(REGISTRY)
    for number, raws in enumerate(workload_chunks(4000, 1000, seed=3)):
        expected = baseline_tables(*python.decide_chunk(TOPIC, 0, raws, f"b{number}"))
        actual = vectorised.decide_chunk(TOPIC, 0, raws, f"b{number}")
        assert actual["ledger"] is not None and actual["ledger"].height > 0
        assert differences(polars_decide.restrict(expected, actual), actual) == [], f"chunk {number}"


TEXTS = st.sampled_from(["", "a", "x" * 128, "x" * 129, "n\x00ul", "Zoë", 'q"uote', "back\\slash", "tab\t"])
JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.sampled_from([0.5, 5.0, 1e300]), TEXTS,
    st.sampled_from(["12", "-3.25", "007.50", "1e3", "lots", "2024-02-29", "2025-02-30", "2025-11-26T08:00:00Z",
                     "2025-11-26T08:00:00.5+02:00", "2025-11-26 08:00:00Z", "+5", "-0", ".5"]),
    st.lists(st.sampled_from([1, "a", None]), max_size=2),
)
ATTRIBUTES = {
    "customer": ["name", "email", "credit_limit", "balance", "notes", "customer_since", "shoe_size"],
    "stock_level": ["quantity", "reorder_point", "last_counted_at", "warehouse"],
    "article": ["price", "active", "weight_kg", "tags", "max_discount_pct"],
}


@st.composite
def messages(draw) -> list[RawMessage]:
    """A few messages on two entities: valid ones, and each field now and then replaced by
    any JSON value, dropped, or joined by an unknown one."""
    chunk = []
    for offset in range(draw(st.integers(1, 6))):
        entity_type = draw(st.sampled_from(sorted(ATTRIBUTES)))
        entity_id = draw(st.sampled_from(["E1", "E2"]))
        names = draw(st.lists(st.sampled_from(ATTRIBUTES[entity_type]), max_size=3, unique=True))
        document = mutation(
            draw(st.integers(0, 4)), entity_type=entity_type, entity_id=entity_id,
            operation_type=draw(st.sampled_from(["CREATE", "CREATE", "UPDATE", "DELETE"])),
            attributes={n: draw(JSON_VALUES) for n in names}, base_version=draw(st.integers(0, 3)),
            edge_node_id=draw(st.sampled_from(["shop-01", "van-02"])),
        )
        if document["operation_type"] == "DELETE" and draw(st.booleans()):
            document["attributes"] = {}
        for field in draw(st.lists(st.sampled_from([*document, "tenant_id", "colour"]), max_size=2)):
            choice = draw(st.integers(0, 2))
            if choice == 0:
                document.pop(field, None)
            else:
                document[field] = draw(JSON_VALUES)
        key = draw(st.sampled_from([f"{entity_type}:{entity_id}".encode(), b"other:key", None]))
        chunk.append(raw(offset, document, key))
    return chunk


@needs_core
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
@example([raw(0, mutation(0, entity_type="article", entity_id="E1", operation_type="CREATE", attributes={},
                         base_version=0, dependencies=["a"]), b"article:E1")])  # waits beyond the chunk
def test_rust_core_decides_generated_messages_as_the_python_engine(chunk):
    python = PythonEngine(REGISTRY, CUSTOM_STRATEGIES)
    rust = rust_core.RustEngine(REGISTRY, CUSTOM_STRATEGIES)
    try:
        expected = baseline_tables(*python.decide_chunk(TOPIC, 0, chunk, "b0"))
    except WaitsOutsideTheChunk:  # e.g. a dependency replaced by ["a"]: the core must not decide it either
        assert rust.decide_chunk(TOPIC, 0, chunk, "b0") is None
        return
    actual = rust.decide_chunk(TOPIC, 0, chunk, "b0")
    if actual is not None:  # otherwise a shape the core leaves to the Python engine, whole chunk
        assert differences(expected, actual) == []
    assert rust.code_mismatches == 0
