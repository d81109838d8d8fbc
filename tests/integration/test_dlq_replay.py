"""`mutagg dlq replay`: after a registry change, what was rejected can go in, once, audited."""

from __future__ import annotations

import orjson
import psycopg
import yaml

from mutagg.migrate import migrate
from mutagg.producer import produce
from mutagg.settings import with_overrides
from mutagg.workload import Message
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from tests.integration.conftest import mutagg, query, read_topic, run_job


def test_replay_after_a_registry_fix(settings, tmp_path):
    document = {
        "id": "tier-1", "edge_node_id": "shop-1", "entity_type": "customer", "entity_id": "C1",
        "operation_type": "CREATE", "attributes": {"name": "Ada", "loyalty_tier": "gold"}, "base_version": 0,
        "timestamp": "2026-11-26T08:00:00Z", "priority": 5, "dependencies": [],
    }
    produce(settings, [Message(b"customer:C1", orjson.dumps(document)), Message(b"customer:C2", b"{broken")])
    run_job(settings)
    assert query(settings, "SELECT status, reason FROM mutation_log")[0] == ("REJECTED", "UNKNOWN_ATTRIBUTE")

    registry = yaml.safe_load(open(settings.registry))
    registry["entity_types"]["customer"]["attributes"]["loyalty_tier"] = {"type": "string"}
    fixed = tmp_path / "registry.yaml"
    fixed.write_text(yaml.safe_dump(registry))
    settings = with_overrides(settings, registry=str(fixed))
    with psycopg.connect(settings.database_url) as connection:
        migrate(connection, load_registry(fixed, custom_strategies=CUSTOM_STRATEGIES))

    assert "re-submitted 1 DLQ records" in mutagg(settings, "dlq", "replay", "--code", "UNKNOWN_ATTRIBUTE").stdout
    assert "re-submitted 0 DLQ records" in mutagg(settings, "dlq", "replay", "--code", "UNKNOWN_ATTRIBUTE").stdout
    run_job(settings)
    assert query(settings, "SELECT status, reason, version FROM mutation_log") == [("APPLIED", None, 1)]
    assert query(settings, "SELECT name, loyalty_tier FROM customer") == [("Ada", "gold")]
    assert query(settings, "SELECT status, reason FROM mutation_log_history WHERE mutation_id = 'tier-1'") == [
        ("REJECTED", "UNKNOWN_ATTRIBUTE")]
    statuses = [orjson.loads(r.value())["status"] for r in read_topic(settings, settings.topic_status)]
    assert statuses == ["REJECTED", "APPLIED"]  # the edge node hears the revised decision
    run_job(settings)  # nothing left to do: the replay is not decided twice
    assert query(settings, "SELECT count(*) FROM mutation_log_history")[0][0] == 1
