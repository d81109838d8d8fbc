"""A stand-in for the Kubernetes API server, for what mutagg/rescaler.py calls: it answers from
`objects` (path -> JSON) or with `failures` (path -> HTTP status), records every call, and runs
`on_call` hooks (method, path -> function of the request body) before answering, e.g. to SIGTERM
local processes when the rescaler deletes "the pods". Plain HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

NAMESPACE = "mutagg"
TARGET = f"/apis/mutagg.erp.example.com/v1alpha1/namespaces/{NAMESPACE}/dataflowscales/mutagg"
JOB = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/mutagg"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
SELECTOR = "batch.kubernetes.io/job-name=mutagg"


class KubeStandIn:
    def __init__(self):
        self.objects: dict[str, object] = {}
        self.failures: dict[str, int] = {}
        self.on_call: dict[tuple[str, str], Callable[[object], None]] = {}
        self.calls: list[tuple[str, str, dict, object, dict]] = []
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with stand_in.lock:
                    stand_in.calls.append((self.command, parts.path, parse_qs(parts.query), body, dict(self.headers)))
                    hook = stand_in.on_call.get((self.command, parts.path))
                    status = stand_in.failures.get(parts.path, 200)
                    document = stand_in.objects.get(parts.path, {}) if status == 200 else {"message": "refused"}
                if hook is not None and status == 200:
                    hook(body)
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PATCH = do_DELETE = _answer

            def log_message(self, *args) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()

    def writes(self) -> list[tuple[str, str, object]]:
        with self.lock:
            return [(method, path, body) for method, path, _, body, _ in self.calls if method != "GET"]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def service_account(directory: Path, token: str = "token-1") -> Path:
    """What a service account volume holds, less the CA (the stand-in speaks plain HTTP)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "namespace").write_text(NAMESPACE)
    (directory / "token").write_text(token)
    return directory
