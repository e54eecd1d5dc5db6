"""A client of the local data path (`hybridml local dataplane up`): HTTPS to an entry listener on 127.0.0.1 with
the listener's hostname as SNI and Host, trusting the throwaway public CA; and plain HTTP straight to a simulated
model server. Used by tests/e2e/test_dataplane.py and scripts/bench_gateway.py; not part of the product.

Every answer of a simulated server names who gave it (`x-hybridml-served-by: <site>/<pipeline>/<variant>`).
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SERVED_BY = "x-hybridml-served-by"


class LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:port that presents `hostname` (SNI, Host) as a client of `<hostname>:443` would."""

    def __init__(self, hostname: str, port: int, context: ssl.SSLContext, timeout: float = 5.0):
        super().__init__(hostname, port, context=context, timeout=timeout)

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def tls_context(ca_file: str | Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@dataclass
class Answer:
    status: int
    served_by: str          # "<site>/<pipeline>/<variant>", "" when the gateway answered itself
    body: bytes = b""

    @property
    def site(self) -> str:
        return self.served_by.split("/")[0] if self.served_by else ""

    @property
    def pipeline(self) -> str:
        return self.served_by.split("/")[1] if self.served_by.count("/") >= 2 else ""

    @property
    def variant(self) -> str:
        return self.served_by.split("/")[2] if self.served_by.count("/") >= 2 else ""


class Client:
    """One keep-alive connection (reopened after an error or a `connection: close`)."""

    def __init__(self, hostname: str, port: int, ca_file: str | Path | None, timeout: float = 5.0,
                 headers: dict[str, str] | None = None):
        self.hostname, self.port, self.timeout = hostname, port, timeout
        self.headers = dict(headers or {})          # sent with every request (e.g. a tenant's API key)
        self.ctx = tls_context(ca_file) if ca_file else None
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.ctx is not None:
                self.conn = LoopbackHTTPS(self.hostname, self.port, self.ctx, self.timeout)
            else:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        return self.conn

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
        headers = {**self.headers, **({"content-type": "application/json"} if body is not None else {}), **(headers or {})}
        try:
            conn = self._connection()
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.getheader("connection", "").lower() == "close":
                self.close()
            return Answer(resp.status, resp.getheader(SERVED_BY, "") or "", data)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Answer(-1, "", str(exc).encode())

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Tally:
    answers: Counter = field(default_factory=Counter)       # served_by -> count (2xx only)
    statuses: Counter = field(default_factory=Counter)      # status -> count (-1: connection error)
    n: int = 0

    def share(self, key: str, by: str = "site") -> float:
        """Share of the 2xx answers from `key` (a site, or `by`="variant"/"pipeline"/"served_by")."""
        ok = sum(self.answers.values())
        idx = {"site": 0, "pipeline": 1, "variant": 2}.get(by)
        hits = sum(c for s, c in self.answers.items() if (s if idx is None else (s.split("/") + ["", "", ""])[idx]) == key)
        return hits / ok if ok else 0.0

    def sites(self) -> set[str]:
        return {s.split("/")[0] for s in self.answers}


def hammer(hostname: str, port: int, ca_file: str | Path | None, path: str, n: int, *, method: str = "POST",
           body: bytes | None = b'{"inputs": []}', threads: int = 4, headers: dict[str, str] | None = None) -> Tally:
    """Send `n` requests over `threads` keep-alive connections; tally who answered and the status codes."""
    tally = Tally()
    lock = threading.Lock()
    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]

    def worker(count: int) -> None:
        c = Client(hostname, port, ca_file, headers=headers)
        local_answers: Counter = Counter()
        local_status: Counter = Counter()
        for _ in range(count):
            a = c.request(method, path, body if method != "GET" else None)
            local_status[a.status] += 1
            if 200 <= a.status < 300:
                local_answers[a.served_by] += 1
        c.close()
        with lock:
            tally.answers.update(local_answers)
            tally.statuses.update(local_status)
            tally.n += count

    ts = [threading.Thread(target=worker, args=(k,)) for k in per if k]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return tally


def server_stats(port: int) -> dict:
    """A simulated server's own counters (asked directly on its port)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=5) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def until(predicate, timeout: float, interval: float = 0.2) -> bool:  # noqa: ANN001 - any zero-argument callable
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
