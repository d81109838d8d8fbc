"""The process count follows the lag (issue 21 part 4): the thin Kubernetes side of autoscaling.

KEDA scales a `DataflowScale` resource (k8s/overlays/prod-autoscale: a custom resource with a
/scale subresource, since a batch/v1 Job has none) from the job's lag. The job follows it:

1. Process 0 of the running cluster (`Rescaler`, a thread) reads the desired count every
   `scale_check_interval_s`, reports the running count in the resource's status (the /scale
   subresource KEDA's HPA reads), and asks `mutagg.process_count.decide` whether to change.
2. To change, it deletes the Job's pods: each gets SIGTERM and stops at a checkpoint, as any
   stop does (finishes its batch in flight, keeps what waits in the recovery snapshots), and
   `run-cluster.sh` exits 143, which the Job retries without counting. Then it patches the
   Job's `parallelism` and `completions` together (an elastic Indexed Job, Kubernetes 1.31+).
   If the patch fails, the pods come back with the old count and the next check tries again.
3. Every pod starts with `mutagg scale join` (`join`): the Job's `completions` is the count to
   run, and it waits until no pod of the cluster it replaces is still running, so an old and a
   new cluster never share the recovery partitions. The new cluster resumes from them (what
   tests/integration/test_rescale.py proves keeps every decision, ack and DLQ record once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from mutagg.kube_api import KubeApi, KubeError
from mutagg.process_count import Decision, ScaleBounds, Verdict, decide
from mutagg.settings import Settings
from schemas.errors import ConfigError, ServiceUnavailable

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "mutagg.erp.example.com", "v1alpha1", "dataflowscales"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
REFUSED = (401, 403, 404)
"""Answers no retry changes: credentials, RBAC, a missing object (exit 2)."""


class JobCluster:
    """The Indexed Job that runs the cluster, and the DataflowScale that says how big it should be."""

    def __init__(self, api: KubeApi, job: str, target: str):
        self.api, self.job, self.target = api, job, target
        namespace = api.namespace
        self._target_path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{target}"
        self._job_path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}"
        self._pods_path = f"/api/v1/namespaces/{namespace}/pods"
        self.selector = f"{JOB_NAME_LABEL}={job}"

    def desired(self) -> int | None:
        """The count KEDA asks for (the target's spec.replicas)."""
        replicas = self.api.get(self._target_path).get("spec", {}).get("replicas")
        return replicas if isinstance(replicas, int) else None

    def report(self, running: int) -> None:
        """The count running and the pods' selector, in the target's status: its /scale subresource
        gives them to the HPA (which needs a selector even for external metrics)."""
        status = {"replicas": running, "selector": self.selector}
        self.api.merge_patch(self._target_path + "/status", {"status": status})

    def completions(self) -> int:
        return int(self.api.get(self._job_path)["spec"]["completions"])

    def pods(self) -> list[dict[str, Any]]:
        return self.api.get(self._pods_path, labelSelector=self.selector).get("items", [])

    def rescale(self, processes: int) -> None:
        """Stop every process (their pods deleted: SIGTERM, a clean stop), then set the Job's
        parallelism and completions together, so the pods come back as `processes` processes."""
        self.api.delete_collection(self._pods_path, labelSelector=self.selector)
        self.api.merge_patch(self._job_path, {"spec": {"parallelism": processes, "completions": processes}})


class Rescaler:
    """Process 0's loop: read, report, decide, and rescale once (the rescale stops this process too)."""

    def __init__(self, cluster: JobCluster, running: int, bounds: ScaleBounds, cooldown_s: float,
                 interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.cluster, self.running, self.bounds = cluster, running, bounds
        self.cooldown_s, self.interval_s, self.clock = cooldown_s, interval_s, clock
        self.started = clock()
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mutagg-rescaler", daemon=True)

    def start(self) -> Rescaler:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 15)

    def check(self) -> Decision:
        """One round. An API error is logged and decides nothing: the cluster keeps running."""
        try:
            desired = self.cluster.desired()
            self.cluster.report(self.running)
        except KubeError as exc:
            log.warning("autoscaling: cannot read or report the desired process count", extra={"error": str(exc)})
            desired = None
        decision = decide(self.running, desired, self.bounds, self.clock() - self.started, self.cooldown_s)
        if decision.verdict is Verdict.RESCALE:
            log.info("autoscaling: stopping the cluster to restart it with another process count",
                     extra={"processes": decision.processes, "running": self.running, "reason": decision.reason})
            try:
                self.cluster.rescale(decision.processes)
            except KubeError as exc:
                log.error("autoscaling: rescale failed; the cluster runs on", extra={"error": str(exc)})
                return Decision(Verdict.KEEP, self.running, f"rescale failed: {exc}")
        return decision

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval_s):
            if self.check().verdict is Verdict.RESCALE:
                return  # SIGTERM follows: the pods are being deleted


def join(cluster: JobCluster, own_pod: str, timeout_s: float, poll_s: float = 2.0,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    """The process count this pod starts with (the Job's completions), once no other pod of the
    Job is still running while being deleted (the cluster it replaces has stopped). Raises
    ServiceUnavailable (exit 3, retried) after `timeout_s`."""
    give_up = clock() + timeout_s
    while True:
        try:
            stopping = sorted(pod["metadata"]["name"] for pod in cluster.pods()
                              if pod["metadata"]["name"] != own_pod and pod["metadata"].get("deletionTimestamp")
                              and pod.get("status", {}).get("phase") in ("Pending", "Running"))
            if not stopping:
                return cluster.completions()
            waiting_for = f"pods of the cluster being replaced still run: {', '.join(stopping)}"
        except KubeError as exc:
            if exc.status in REFUSED:
                raise ConfigError(f"autoscaling: the API server refuses the job's service account or does not "
                                  f"know its objects (RBAC and the DataflowScale of the overlay): {exc}") from exc
            waiting_for = f"the Kubernetes API: {exc}"
        if clock() >= give_up:
            raise ServiceUnavailable(f"after {timeout_s:.0f} s waiting for {waiting_for}")
        log.info("waiting before joining the cluster", extra={"waiting_for": waiting_for})
        sleep(poll_s)


def cluster_of(settings: Settings) -> JobCluster:
    """The Job and its DataflowScale, through the pod's service account."""
    if not settings.scale_target or not settings.scale_job:
        raise KubeError("autoscaling is off: set MUTAGG_SCALE_TARGET and MUTAGG_SCALE_JOB")
    api = KubeApi(settings.kube_api_url, settings.kube_service_account_dir)
    return JobCluster(api, settings.scale_job, settings.scale_target)
