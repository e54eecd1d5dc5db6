"""Feast's push path over HTTP(S): a batch of rows -> `POST <feature server>/push`. Standard library only.

The feature server answers 200 once the rows are in the online store (Feast awaits the write), so a row is readable
online when its push returns. Connection failures, 5xx and 429 are retried with exponential backoff (a feature
server restarting or failing over its Redis); after the last try, or on another 4xx (the request itself is wrong),
`PushError` says what was pushed where and what came back. The job lets it fail the task: Flink restarts from the
last checkpoint and pushes the rows again (a push is idempotent: the same row writes the same values).
"""
from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from workloads.streaming.config import JobConfig

TIMEOUT_S = 10.0
BACKOFF_S = 0.1


class PushError(RuntimeError):
    pass


def ssl_context(cfg: JobConfig) -> ssl.SSLContext:
    """Verify the server against the job's CA file (the fleet CA); present the client certificate if configured."""
    ctx = ssl.create_default_context(cafile=cfg.tls_ca)
    if cfg.tls_cert and cfg.tls_key:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


class Pusher:
    """One keep-alive connection to the feature server (one per buffering subtask)."""

    def __init__(self, cfg: JobConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        url = urlsplit(cfg.feature_server)
        self.host, self.https = url.hostname or "", url.scheme == "https"
        self.port = url.port or (443 if self.https else 80)
        self.context = ssl_context(cfg) if self.https else None
        self.conn: http.client.HTTPConnection | None = None
        self.sleep = sleep
        self.pushed_rows = 0
        self.requests = 0
        self.retries = 0

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.context is not None:
                self.conn = http.client.HTTPSConnection(self.host, self.port, timeout=TIMEOUT_S, context=self.context)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _post(self, body: bytes) -> tuple[int, str]:
        conn = self._connect()
        try:
            conn.request("POST", "/push", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        except (OSError, http.client.HTTPException):
            self.close()   # a fresh connection next try
            raise

    def push(self, body: dict[str, Any]) -> None:
        """POST one batch; PushError after `push_retries` retries, or at once on a 4xx other than 429."""
        data = json.dumps(body, separators=(",", ":")).encode()
        rows = len(next(iter(body["df"].values()), []))
        tries = self.cfg.push_retries + 1
        last = ""
        for attempt in range(tries):
            if attempt:
                self.retries += 1
                self.sleep(BACKOFF_S * 2 ** (attempt - 1))
            try:
                status, text = self._post(data)
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            self.requests += 1
            if status == 200:
                self.pushed_rows += rows
                return
            last = f"HTTP {status}: {text[:300]}"
            if 400 <= status < 500 and status != 429:
                break
        raise PushError(f"feature view {self.cfg.feature_view}: push of {rows} row(s) to {self.cfg.feature_server}/push "
                        f"(push source {self.cfg.push_source}) failed after {attempt + 1} tr{'y' if attempt == 0 else 'ies'}: {last}")
