"""The few Kubernetes API calls autoscaling makes (mutagg/rescaler.py), as the pod's service account.

Plain HTTPS with the standard library: five calls do not justify a client library in the image's
lock. The token is read again for every call, because the kubelet rotates a projected token
(k8s/overlays/prod-autoscale mounts one; the base pod mounts none)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from schemas.errors import MutaggError

MERGE_PATCH = "application/merge-patch+json"


class KubeError(MutaggError):
    """The API server refused or could not be reached; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class KubeApi:
    """JSON over HTTPS to `url`, authenticated with the service account in `account_dir`
    (token, ca.crt, namespace: what a service account volume holds)."""

    def __init__(self, url: str, account_dir: str, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self.account = Path(account_dir)
        self.timeout_s = timeout_s
        try:
            self.namespace = (self.account / "namespace").read_text().strip()
        except OSError as exc:
            raise KubeError(f"no service account in {account_dir} (autoscaling needs the projected token of "
                            f"k8s/overlays/prod-autoscale): {exc}") from exc
        ca = self.account / "ca.crt"
        self._tls = ssl.create_default_context(cafile=str(ca)) if ca.exists() else None

    def get(self, path: str, **query: str) -> dict[str, Any]:
        return self._call("GET", path, query)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", path, {}, patch, MERGE_PATCH)

    def delete_collection(self, path: str, **query: str) -> dict[str, Any]:
        return self._call("DELETE", path, query)

    def _call(self, method: str, path: str, query: dict[str, str], body: Any = None,
              content_type: str = "application/json") -> dict[str, Any]:
        address = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(address, method=method, data=data)
        request.add_header("Accept", "application/json")
        request.add_header("Content-Type", content_type)
        token = self.account / "token"
        if token.exists():
            request.add_header("Authorization", f"Bearer {token.read_text().strip()}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._tls) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise KubeError(f"{method} {path}: HTTP {exc.code}: {detail}", exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise KubeError(f"{method} {path}: {exc}") from exc
