"""A simulated fleet on the real client, the real broker and the real job: nodes
drop offline and come back, edit hot entities concurrently, and in the end every
mutation any node recorded is decided exactly once, acknowledged to its node, and
left in an outbox only when it needs a person (CONFLICT, REJECTED, FAILED)."""

from __future__ import annotations

from collections import Counter

from edge.records import EntryState
from edge.simulator import FleetPlan, Simulation
from edge.transitions import FINAL
from tests.integration.conftest import query, run_job


def test_a_fleet_with_offline_periods_and_concurrent_edits_settles_exactly_once(settings, tmp_path):
    plan = FleetPlan(nodes=4, rounds=6, changes_per_round=(2, 6), offline_probability=0.3, seed=11)
    simulation = Simulation(plan, settings.kafka_client_config(), settings.topic_mutations, settings.topic_status,
                            tmp_path, run_tag="fleet")
    try:
        report = simulation.run(between_rounds=lambda round_no: run_job(settings) if round_no % 2 else None)
        assert sum(report.offline_rounds.values()) > 0
        assert simulation.finish(deadline_s=60.0)
        run_job(settings)
        assert simulation.collect_acks(deadline_s=30.0)

        recorded = report.all_ids
        ledger = dict(query(settings, "SELECT mutation_id, status FROM mutation_log"))
        assert len(recorded) == len(set(recorded)) == len(ledger)
        assert set(ledger) == set(recorded)
        assert query(settings, "SELECT count(*) FROM mutation_duplicates")[0][0] == 0
        # Base versions came from acks and synced snapshots, so none is from the future or unknown.
        assert "REJECTED" not in ledger.values()
        # Concurrent edits met: conflicts were detected and resolved (or held for a person).
        assert query(settings, "SELECT count(*) FROM conflicts")[0][0] > 0

        left: Counter[str] = Counter()
        for node in simulation.nodes.values():
            for entry in node.outbox.entries():
                assert entry.state in FINAL - {EntryState.APPLIED}
                assert ledger[entry.mutation_id] == entry.state.value
                left[entry.state.value] += 1
        held = Counter(status for status in ledger.values() if status != "APPLIED")
        assert left == held  # exactly the mutations that need a person stay visible at their node
    finally:
        simulation.close()
