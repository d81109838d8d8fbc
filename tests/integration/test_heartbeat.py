"""The probes of a real `mutagg run`: /healthz follows the dataflow's own worker loop, not the
HTTP thread. A worker stuck in a step (the `hang_worker` fault point) turns /healthz to 503
within MUTAGG_HEARTBEAT_TIMEOUT_S while /metrics still answers; /readyz answers once the
dataflow runs and the database and broker answered."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from mutagg.producer import produce
from mutagg.workload import Workload
from tests.integration.conftest import settings_env
from tests.integration.test_audit_job import free_port

pytestmark = pytest.mark.integration


def probe(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body) of `path`; (0, error) while nothing listens yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def wait_for(job: subprocess.Popen, check, what: str, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while True:
        assert job.poll() is None, f"the job exited {job.returncode} while waiting for {what}"
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} within {timeout_s}s"
        time.sleep(0.1)


def test_a_stuck_worker_fails_liveness_while_metrics_still_answer(settings, tmp_path):
    port = free_port()
    job = subprocess.Popen(
        [sys.executable, "-m", "mutagg.cli", "run"],
        env=settings_env(settings, MUTAGG_METRICS_PORT=str(port), MUTAGG_AUDIT_URI=str(tmp_path / "audit"),
                         MUTAGG_HEARTBEAT_TIMEOUT_S="1.5", MUTAGG_FAULT_POINT="hang_worker:1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Alive and ready while idle: the heartbeat input turns every worker loop without any input.
        wait_for(job, lambda: probe(port, "/readyz")[0] == 200, "readiness")
        time.sleep(2.0)  # longer than the timeout: an idle loop still beats
        assert probe(port, "/healthz")[0] == 200, probe(port, "/healthz")
        produce(settings, Workload(seed=3).generate(20))  # the first batch's flush hangs the worker
        _status, reason = wait_for(
            job, lambda: (found := probe(port, "/healthz"))[0] == 503 and found, "a failing liveness probe")
        assert "stuck" in reason, reason
        metrics_status, text = probe(port, "/metrics")
        assert metrics_status == 200 and "mutagg_mutations_total" in text
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait(30)
