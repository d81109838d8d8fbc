"""The job's record for the edges (mutagg/central_state.py): delays from the lag lookup,
the throttle probe's verdict, and nothing published before the first lookup."""

from __future__ import annotations

import pytest

from mutagg.central_state import CentralStatePublisher, not_throttled, start_central_state, state_record
from mutagg.refresher import LagSnapshot
from mutagg.settings import Settings


def test_each_partition_is_behind_by_the_age_of_its_oldest_uncommitted_message():
    snapshot = LagSnapshot(100.0, (0, 1, 2), {0: 40_000, 2: 90_500})
    record = state_record(snapshot, 130.0, (True, ["replication_lag"]), 1, 10.0)
    assert record["partitions"] == {"0": 90.0, "1": 0.0, "2": 39.5}
    assert record["delay_s"] == 90.0 and record["throttled"] is True and record["reasons"] == ["replication_lag"]
    assert (record["process"], record["published_at"], record["measured_at"], record["interval_s"]) == \
        (1, 130.0, 100.0, 10.0)


def test_a_partition_lagging_by_an_unknown_time_makes_the_delay_unknown():
    record = state_record(LagSnapshot(0.0, (0, 1), {0: 0}, frozenset({1})), 5.0, not_throttled(), 0, 10.0)
    assert record["partitions"] == {"0": 5.0, "1": None} and record["delay_s"] is None
    assert record["throttled"] is False and record["reasons"] == []


def test_nothing_is_published_before_the_first_lag_lookup_and_zero_turns_it_off():
    publisher = CentralStatePublisher(Settings(kafka_bootstrap="127.0.0.1:1"), lambda: None)
    assert publisher.publish_once() is False and publisher.published == 0
    assert start_central_state(Settings(central_state_interval_s=0), None, None, 0) is None


def test_the_key_names_the_job_and_the_process():
    publisher = CentralStatePublisher(Settings(kafka_bootstrap="127.0.0.1:1", central_state_key="erp-eu"),
                                      lambda: None, process=3)
    assert publisher.key == b"erp-eu/3" and publisher.topic == "edge.central-state"


@pytest.mark.parametrize("interval", ["-1"])
def test_a_negative_interval_is_refused(interval):
    from mutagg.settings import load_settings
    from schemas.errors import ConfigError

    with pytest.raises(ConfigError, match="central_state_interval_s"):
        load_settings(environ={"MUTAGG_CENTRAL_STATE_INTERVAL_S": interval})
