"""services/services.sh on a machine without the jar cache: the first start fetches
Kafka's jars, and must leave the start/stop lock free (a broker that kept it made
every later start wait 300 s and fail: the test suite after `make services`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mutagg.ports import free_ports

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "services" / "services.sh"
pytestmark = pytest.mark.integration


def _lock_is_free(lock: Path) -> bool:
    return subprocess.run(["flock", "-n", str(lock), "true"]).returncode == 0


def test_first_start_fetches_the_jars_and_leaves_the_lock_free(tmp_path):
    broker, controller = free_ports(2)
    env = {
        **os.environ,
        "MUTAGG_CACHE_DIR": str(tmp_path / "cache"),  # empty: the jars are fetched (mvn's own cache helps)
        "MUTAGG_STATE_DIR": str(tmp_path / "state"),
        "MUTAGG_KAFKA_PORT": str(broker),
        "MUTAGG_KAFKA_CONTROLLER_PORT": str(controller),
    }

    def services(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)

    try:
        first = services("start", "kafka")
        assert first.returncode == 0, first.stderr
        assert "downloading" in first.stderr  # the fetch path ran
        assert list((tmp_path / "cache").glob("kafka-*/libs/kafka_2.13-*.jar"))
        assert not list((tmp_path / "cache").glob("kafka-*/libs.tmp.*"))  # its temp dir is gone
        assert _lock_is_free(tmp_path / "state" / ".lock")

        again = services("start", "kafka", timeout=120)  # the lock waits up to 300 s: this would time out
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr
        assert services("status", "kafka").returncode == 0
    finally:
        services("stop", "kafka", timeout=180)
    assert services("status", "kafka").returncode == 3
