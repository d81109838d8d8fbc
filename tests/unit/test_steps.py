"""Step ids are part of the recovery format: renaming one silently drops its state."""

from dataflows import steps


def test_step_ids_never_change():
    assert (steps.FLOW_ID, steps.INPUT, steps.DECODE, steps.ROUTE, steps.APPLY, steps.REPORT) == (
        "mutation_aggregator", "kafka_input", "decode", "route_to_committer", "apply", "report",
    )
