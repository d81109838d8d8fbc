"""The Kubernetes side of autoscaling (mutagg/rescaler.py, mutagg/kube_api.py) against a small
stand-in for the API server: the calls it makes, in which order, and what it does on errors."""

from __future__ import annotations

import pytest

from mutagg.kube_api import MERGE_PATCH, KubeApi
from mutagg.process_count import ScaleBounds, Verdict
from mutagg.rescaler import JobCluster, Rescaler, join
from schemas.errors import ConfigError, ServiceUnavailable
from tests.kube_stand_in import JOB, PODS, SELECTOR, TARGET, KubeStandIn, service_account

BOUNDS = ScaleBounds(min_processes=1, max_processes=3, workers=2, shards=12, recovery_partitions=12)


@pytest.fixture
def server():
    fake = KubeStandIn()
    fake.objects[TARGET] = {"spec": {"replicas": 2}}
    fake.objects[JOB] = {"spec": {"parallelism": 2, "completions": 2}}
    fake.objects[PODS] = {"items": []}
    yield fake
    fake.close()


@pytest.fixture
def account(tmp_path):
    return service_account(tmp_path)


def _cluster(server, account) -> JobCluster:
    return JobCluster(KubeApi(server.url, str(account)), "mutagg", "mutagg")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_rescale_deletes_the_pods_then_sets_parallelism_and_completions_together(server, account):
    clock = Clock()
    rescaler = Rescaler(_cluster(server, account), 1, BOUNDS, cooldown_s=600, interval_s=30, clock=clock)
    clock.now = 600
    decision = rescaler.check()
    assert (decision.verdict, decision.processes) == (Verdict.RESCALE, 2)
    assert server.writes() == [
        ("PATCH", TARGET + "/status", {"status": {"replicas": 1, "selector": SELECTOR}}),
        ("DELETE", PODS, None),
        ("PATCH", JOB, {"spec": {"parallelism": 2, "completions": 2}}),
    ]
    deletes = [query for method, _, query, _, _ in server.calls if method == "DELETE"]
    assert deletes == [{"labelSelector": [SELECTOR]}]
    for method, _, _, _, headers in server.calls:
        assert headers["Authorization"] == "Bearer token-1"
        if method == "PATCH":
            assert headers["Content-Type"] == MERGE_PATCH


def test_nothing_changes_before_the_cooldown_or_at_the_desired_count(server, account):
    clock = Clock()
    rescaler = Rescaler(_cluster(server, account), 1, BOUNDS, cooldown_s=600, interval_s=30, clock=clock)
    clock.now = 599
    assert rescaler.check().verdict is Verdict.KEEP
    rescaler.running = 2
    clock.now = 6000
    assert rescaler.check().verdict is Verdict.KEEP
    assert [method for method, _, _ in server.writes()] == ["PATCH", "PATCH"]  # the status only


def test_an_unreadable_target_or_a_failed_stop_keeps_the_cluster_running(server, account):
    clock = Clock()
    rescaler = Rescaler(_cluster(server, account), 1, BOUNDS, cooldown_s=600, interval_s=30, clock=clock)
    clock.now = 6000
    server.failures[TARGET] = 500
    assert rescaler.check().verdict is Verdict.KEEP
    assert [method for method, _, _ in server.writes()] == []
    del server.failures[TARGET]
    server.failures[PODS] = 403
    decision = rescaler.check()
    assert decision.verdict is Verdict.KEEP and "HTTP 403" in decision.reason
    assert not [call for call in server.writes() if call[1] == JOB]  # the Job keeps its count


def test_the_token_is_read_again_for_every_call(server, account):
    cluster = _cluster(server, account)
    cluster.desired()
    (account / "token").write_text("token-2\n")
    cluster.desired()
    assert [headers["Authorization"] for *_, headers in server.calls] == ["Bearer token-1", "Bearer token-2"]


def _pod(name: str, phase: str, deleting: bool) -> dict:
    metadata = {"name": name, **({"deletionTimestamp": "2026-12-07T12:00:00Z"} if deleting else {})}
    return {"metadata": metadata, "status": {"phase": phase}}


def test_a_pod_joins_once_the_cluster_it_replaces_has_stopped(server, account):
    clock = Clock()
    server.objects[PODS] = {"items": [_pod("mutagg-0-new", "Pending", False), _pod("mutagg-0-old", "Running", True),
                                      _pod("mutagg-1-old", "Failed", True)]}
    polls = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        clock.sleep(seconds)
        if len(polls) == 3:  # the old process 0 has stopped
            server.objects[PODS]["items"][1]["status"]["phase"] = "Failed"

    assert join(_cluster(server, account), "mutagg-0-new", timeout_s=60, poll_s=2, clock=clock, sleep=sleep) == 2
    assert polls == [2, 2, 2]


def test_joining_gives_up_after_the_timeout_and_refusals_are_configuration(server, account):
    clock = Clock()
    server.objects[PODS] = {"items": [_pod("mutagg-0-old", "Running", True)]}
    with pytest.raises(ServiceUnavailable, match="mutagg-0-old"):
        join(_cluster(server, account), "mutagg-0-new", timeout_s=10, poll_s=2, clock=clock, sleep=clock.sleep)
    server.failures[PODS] = 403
    with pytest.raises(ConfigError, match="RBAC"):
        join(_cluster(server, account), "mutagg-0-new", timeout_s=10, poll_s=2, clock=clock, sleep=clock.sleep)
    server.failures[PODS] = 503  # weather: retried until the deadline
    with pytest.raises(ServiceUnavailable, match="HTTP 503"):
        join(_cluster(server, account), "mutagg-0-new", timeout_s=10, poll_s=2, clock=clock, sleep=clock.sleep)


def test_the_job_refuses_to_start_with_bounds_its_shards_cannot_use(server, account, tmp_path):
    from bytewax.recovery import init_db_dir

    from mutagg.runner import rescaler_for
    from mutagg.settings import load_settings

    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 4)
    environ = {"MUTAGG_SCALE_TARGET": "mutagg", "MUTAGG_SCALE_JOB": "mutagg", "MUTAGG_SCALE_MAX_PROCESSES": "2",
               "MUTAGG_SHARDS": "4", "MUTAGG_RECOVERY_DIR": str(recovery), "MUTAGG_KUBE_API_URL": server.url,
               "MUTAGG_KUBE_SERVICE_ACCOUNT_DIR": str(account)}
    assert rescaler_for(load_settings(environ={}), 2, 1) is None  # autoscaling off
    assert rescaler_for(load_settings(environ=environ), 2, 1) is not None  # 2 and 4 workers on 4 shards
    with pytest.raises(ConfigError, match="3 process"):
        rescaler_for(load_settings(environ={**environ, "MUTAGG_SCALE_MAX_PROCESSES": "3"}), 1, 1)
    with pytest.raises(ConfigError, match="MUTAGG_SHARDS > 1"):
        rescaler_for(load_settings(environ={**environ, "MUTAGG_SHARDS": "1"}), 1, 1)
    with pytest.raises(ConfigError, match="MUTAGG_RECOVERY_PARTITIONS=4 is fewer than the 8"):
        rescaler_for(load_settings(environ={**environ, "MUTAGG_SHARDS": "8"}), 4, 1)
    with pytest.raises(ConfigError, match="needs MUTAGG_RECOVERY_DIR"):
        rescaler_for(load_settings(environ={k: v for k, v in environ.items() if k != "MUTAGG_RECOVERY_DIR"}), 2, 1)
    with pytest.raises(ConfigError, match="scale_job"):
        load_settings(environ={k: v for k, v in environ.items() if k != "MUTAGG_SCALE_JOB"})
