"""The job's HTTP endpoint: /metrics for Prometheus, /healthz and /readyz for Kubernetes.

/healthz (liveness) and /readyz (readiness) answer from the heartbeat (mutagg/heartbeat.py),
i.e. from the dataflow's own progress, never from this HTTP thread being up: 200 with the
reason as text, or 503 with it. Any other path is /metrics, as prometheus_client serves it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from mutagg.heartbeat import Heartbeat, Verdict

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


@dataclass(frozen=True)
class Probes:
    """What the probe endpoints ask: the heartbeat, and how long a worker may stay silent
    (`timeout_s`, MUTAGG_HEARTBEAT_TIMEOUT_S) or wait on a dependency (`wait_limit_s`)."""

    heartbeat: Heartbeat
    timeout_s: float
    wait_limit_s: float

    def liveness(self) -> Verdict:
        return self.heartbeat.liveness(self.timeout_s, self.wait_limit_s)

    def readiness(self) -> Verdict:
        return self.heartbeat.readiness()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:
        """Probes every few seconds would flood the job's JSON logs."""


def endpoint_app(registry: CollectorRegistry, probes: Probes) -> Callable:
    metrics_app = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in (LIVENESS_PATH, READINESS_PATH):
            verdict = probes.liveness() if path == LIVENESS_PATH else probes.readiness()
            body = (verdict.reason + "\n").encode()
            status = "200 OK" if verdict.ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics_app(environ, start_response)

    return app


def serve_endpoint(registry: CollectorRegistry, probes: Probes, port: int, address: str) -> WSGIServer:
    """Bind `address`:`port` (0: any free port); the caller runs `serve_forever` on a thread."""
    return make_server(address, port, endpoint_app(registry, probes), ThreadingWSGIServer, handler_class=_Quiet)
