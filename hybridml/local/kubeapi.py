"""A minimal Kubernetes REST client (stdlib only) authenticating with a client certificate.

Enough for the local control planes: health checks, server-side apply, create/patch/delete,
and reads. Not a general client: the project's tests may use the ``kubernetes`` package instead.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import HybridmlError

from .errors import LocalClusterError, LocalClusterTimeout


class KubeAPIError(HybridmlError, RuntimeError):
    """The API server answered with an unexpected HTTP status.

    A HybridmlError like every error hybridml raises on purpose; still a RuntimeError too, which
    `hybridml local up` (hybridml/cli/local.py) and `up_cluster` catch to report a cluster that
    failed to come up."""

    def __init__(self, method: str, path: str, status: int, body: str):
        self.status = status
        self.body = body
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:2000]}")


@dataclass
class KubeAPI:
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    timeout: float = 60.0

    def __post_init__(self) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        self._ctx = ctx
        self._conn: http.client.HTTPSConnection | None = None

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.port}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=self.timeout)
        return self._conn

    def request_raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, bytes]:
        if params:
            path = f"{path}?{urllib.parse.urlencode(params)}"
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        path: str,
        obj: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Any:
        body = None if obj is None else json.dumps(obj).encode()
        status, data = self.request_raw(method, path, body, params=params, content_type=content_type, accept=accept)
        if status not in ok:
            raise KubeAPIError(method, path, status, data.decode(errors="replace"))
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    # --- conveniences ---------------------------------------------------------------------------
    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def get_or_none(self, path: str) -> Any:
        status, data = self.request_raw("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise KubeAPIError("GET", path, status, data.decode(errors="replace"))
        return json.loads(data)

    def post(self, path: str, obj: Any) -> Any:
        return self.request("POST", path, obj)

    def delete(self, path: str) -> None:
        self.request("DELETE", path, ok=(200, 202, 404))

    def merge_patch(self, path: str, patch: Any) -> Any:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    def apply(self, path: str, obj: Any, field_manager: str = "hybridml", force: bool = True) -> Any:
        """Server-side apply (JSON is valid YAML for application/apply-patch+yaml)."""
        params = {"fieldManager": field_manager}
        if force:
            params["force"] = "true"
        return self.request("PATCH", path, obj, params=params, content_type="application/apply-patch+yaml")

    def list_metadata(self, path: str, params: dict[str, str] | None = None) -> list[dict]:
        """List objects' metadata only (PartialObjectMetadataList): cheap even for big CRDs."""
        res = self.request(
            "GET", path, params=params,
            accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
        )
        return res.get("items") or []

    def healthy(self, endpoint: str = "/readyz") -> bool:
        try:
            status, _ = self.request_raw("GET", endpoint)
            return status == 200
        except (OSError, http.client.HTTPException, ssl.SSLError):
            return False

    def wait_healthy(self, timeout: float, endpoint: str = "/readyz", alive: Any = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy(endpoint):
                return
            if alive is not None and not alive():
                raise LocalClusterError(f"{self.server} process exited while waiting for {endpoint}")
            time.sleep(0.25)
        raise LocalClusterTimeout(f"{self.server}{endpoint} not healthy after {timeout:.0f}s")
