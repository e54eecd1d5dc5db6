"""A SIMULATED model server for the local data path: no model runs, it only answers in the real protocols.

One process per pipeline and site (the replicas of a site are one endpoint here: the route's weights are the
plan's split over sites and the spec's A/B split over variants, and each variant is a Backend of its own, so
the process listens on one loopback port per variant). Each answer names who gave it: the header
`x-hybridml-served-by: <site>/<pipeline>/<variant>` and the same fields in the JSON body.

- Triton pipelines (served through KServe in the fleet): the KServe v2 inference protocol (REST):
  `GET /v2/health/live|ready`, `GET /v2`, `GET /v2/models/<model>[/ready]`, `POST /v2/models/<model>/infer`
  (any JSON body; the answer carries one FP32 output `score`), 404 with `{"error": ...}` for another model.
- CPU services: plain HTTP, any method and path: `{"site", "pipeline", "variant", "path"}`.
- `GET /_sim/stats` (asked on the server's own port, not through the gateway): requests counted per variant, per
  Host header and per `x-hybridml-tenant` as received (every copy, comma-joined: what the gateway's identity left
  there), and how many requests still carried an API key (`authorization` / `x-api-key`: the gateway strips them).

Run: `python -m hybridml.local.dataplane.model_sim --site S --pipeline P --engine triton|cpu --listen VARIANT=PORT ...`
(an empty VARIANT: `--listen =PORT`). Listens on 127.0.0.1 only; stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

HEADER = "x-hybridml-served-by"
TENANT_HEADER = "x-hybridml-tenant"
CREDENTIAL_HEADERS = ("authorization", "x-api-key")
LOOPBACK = "127.0.0.1"
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large"}


@dataclass
class Stats:
    requests: Counter = field(default_factory=Counter)      # variant -> requests
    hosts: Counter = field(default_factory=Counter)         # Host header -> requests (the first 100 hosts)
    tenants: Counter = field(default_factory=Counter)       # x-hybridml-tenant as received ("" absent) -> requests
    credentials: int = 0                                    # requests that still carried an API key

    def as_dict(self) -> dict:
        return {"requests": dict(self.requests), "hosts": dict(self.hosts), "tenants": dict(self.tenants),
                "credentials": self.credentials}


@dataclass(frozen=True)
class Identity:
    site: str
    pipeline: str
    engine: str
    variant: str

    @property
    def served_by(self) -> str:
        return f"{self.site}/{self.pipeline}/{self.variant}"

    def fields(self) -> dict:
        return {"site": self.site, "pipeline": self.pipeline, "variant": self.variant, "simulated": True}


def answer(who: Identity, method: str, path: str, body: bytes, stats: Stats) -> tuple[int, dict]:
    """(status, JSON body) of one request."""
    path = path.split("?", 1)[0]
    if path == "/_sim/stats":
        return 200, {**who.fields(), **stats.as_dict()}
    if who.engine != "triton":
        return 200, {**who.fields(), "path": path, "method": method}
    if path in ("/v2/health/live", "/v2/health/ready"):
        return 200, {"live": True} if path.endswith("live") else {"ready": True}
    if path == "/v2":
        return 200, {"name": "hybridml-simulated-triton", "version": "0", "extensions": [], **who.fields()}
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[:2] != ["v2", "models"]:
        return 404, {"error": f"no such endpoint {path} (KServe v2 protocol)", **who.fields()}
    model, rest = parts[2], parts[3:]
    if model != who.pipeline:
        return 404, {"error": f"model {model} is not served here (this server serves {who.pipeline})", **who.fields()}
    if rest == [] and method == "GET":
        return 200, {"name": model, "versions": ["1"], "platform": "simulated",
                     "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, -1]}],
                     "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}], **who.fields()}
    if rest == ["ready"]:
        return 200, {"ready": True, **who.fields()}
    if rest == ["infer"] and method == "POST":
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "the inference request is not JSON", **who.fields()}
        score = (zlib.crc32(body) % 1000) / 1000.0
        return 200, {"model_name": model, "model_version": "1", "id": str(request.get("id", "")),
                     "outputs": [{"name": "score", "datatype": "FP32", "shape": [1, 1], "data": [score]}],
                     "parameters": who.fields()}
    return 405 if rest == ["infer"] else 404, {"error": f"{method} {path} is not part of the KServe v2 protocol",
                                               **who.fields()}


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, Content-Length and chunked request bodies; enough for Envoy and the test clients."""

    def __init__(self, who: Identity, stats: Stats):
        self.who, self.stats = who, stats
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None and not self.transport.is_closing():
            if not self._one():
                break

    def _one(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._send(413, {"error": "request head too large"}, close=True)
            return False
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            self._send(400, {"error": "malformed request line"}, close=True)
            return False
        headers: dict[str, str] = {}
        tenants: list[str] = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
            if k.strip().lower() == TENANT_HEADER:
                tenants.append(v.strip())
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parsed = _chunked(self.buf, start)
            if parsed is None:
                return False
            body, consumed = parsed
        else:
            length = int(headers.get("content-length") or 0)
            if length > MAX_BODY:
                self._send(413, {"error": "body too large"}, close=True)
                return False
            if len(self.buf) < start + length:
                return False
            body, consumed = bytes(self.buf[start:start + length]), start + length
        del self.buf[:consumed]
        if target.split("?", 1)[0] != "/_sim/stats":
            self.stats.requests[self.who.variant] += 1
            host = headers.get("host", "")
            if host in self.stats.hosts or len(self.stats.hosts) < 100:
                self.stats.hosts[host] += 1
            tenant = ",".join(tenants)
            if tenant in self.stats.tenants or len(self.stats.tenants) < 100:
                self.stats.tenants[tenant] += 1
            self.stats.credentials += any(h in headers for h in CREDENTIAL_HEADERS)
        status, payload = answer(self.who, method, target, body, self.stats)
        close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        self._send(status, payload, close=close)
        return True

    def _send(self, status: int, payload: dict, *, close: bool = False) -> None:
        assert self.transport is not None
        body = json.dumps(payload).encode()
        head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n{HEADER}: {self.who.served_by}\r\n"
                f"{'connection: close' if close else 'connection: keep-alive'}\r\n\r\n")
        self.transport.write(head.encode() + body)
        if close:
            self.transport.close()


def _chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """(body, bytes consumed) of a complete chunked body from `start`, or None while incomplete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";")[0] or b"0", 16)
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            return (bytes(body), trailer_end + 2) if trailer_end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos:pos + size]
        pos += size + 2


def _factory(who: Identity, stats: Stats) -> Callable[[], HttpProtocol]:
    return lambda: HttpProtocol(who, stats)


async def serve(site: str, pipeline: str, engine: str, listen: dict[str, int], stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or until `stop` is set)."""
    loop = asyncio.get_running_loop()
    stats = Stats()
    servers = []
    for variant, port in sorted(listen.items()):
        servers.append(await loop.create_server(_factory(Identity(site, pipeline, engine, variant), stats), LOOPBACK,
                                                port, reuse_address=True, backlog=1024))
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, RuntimeError):     # not the main thread (an in-process test)
            loop.add_signal_handler(sig, stop.set)
    print(f"simulated {engine} model server {site}/{pipeline} listening on "
          + ", ".join(f"{v or '-'}=127.0.0.1:{p}" for v, p in sorted(listen.items())), flush=True)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A SIMULATED model server (KServe v2 for Triton, plain HTTP for CPU services).")
    ap.add_argument("--site", required=True)
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--engine", required=True, choices=["triton", "cpu"])
    ap.add_argument("--listen", action="append", default=[], metavar="VARIANT=PORT", help="one per variant")
    args = ap.parse_args(argv)
    listen = {}
    for item in args.listen:
        variant, _, port = item.rpartition("=")
        listen[variant] = int(port)
    if not listen:
        ap.error("at least one --listen VARIANT=PORT")
    asyncio.run(serve(args.site, args.pipeline, args.engine, listen))


if __name__ == "__main__":
    main()
