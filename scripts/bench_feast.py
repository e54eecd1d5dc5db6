#!/usr/bin/env python3
"""Online feature lookups, measured: Feast's feature server over HTTP and the Feast SDK, on Redis with Sentinel.

    .venv/bin/python scripts/bench_feast.py [--rates 500,2000] [--batches 1,10] [--seconds 6] [--rows 20000] [--json FILE]
    .venv/bin/python scripts/bench_feast.py --memory     # Redis bytes per entity vs infra.features.row_bytes

One run, side by side (tools/feast_rig.py: loopback Redis primary + replica + three Sentinels, the repository
generated from the spec, `feast apply`, rows materialized):
1. per view shape (local user-profile and item-stats, prod user-features-000) and per fixed rate: HTTP lookups
   against the feature server (Feast's app, one uvicorn worker as `feast serve -w 1` runs it, plus a middleware
   that times each request inside the server) and SDK lookups (`get_online_features` in one process);
   p50/p99 server-side and as the client saw them (from each request's scheduled start, so queueing counts);
2. failover: HTTP and SDK lookups at a moderate rate while the Redis primary is killed; errors and the time
   until lookups succeed again (the Sentinels promote the replica).
Open loop: requests start on a fixed schedule whatever the answers do. Needs scripts/feast_venv.sh and redis-server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infra.features import row_bytes  # noqa: E402
from infra.loader import load_environment  # noqa: E402
from tools import feast_rig  # noqa: E402
from tools.feast_worker import entity_key  # noqa: E402

WARMUP_S = 1.0
"""Each cell starts with this long at its rate, not counted (fresh connections, first-call code paths)."""
DROP_AFTER_S = 1.0
"""An HTTP request still waiting for a connection this long after it was due is dropped (the server is past its
capacity; the run reports how many) instead of queueing for the rest of the run."""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def request_bytes(shape: dict, rows: list[int], port: int) -> bytes:
    body = json.dumps({"features": [f"{shape['view']}:{n}" for n, _, _ in shape["features"]],
                       "entities": {k: [entity_key(r, t) for r in rows] for k, t in shape["entities"]}}).encode()
    head = (f"POST /get-online-features HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> tuple[int, bytes]:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    return status, await reader.readexactly(length)


async def http_load(port: int, shape: dict, rate: float, seconds: float, batch: int, conns: int = 24,
                    on_tick=None) -> dict:
    """Open-loop HTTP lookups: request i is due at t0 + i*batch/rate; latency counts from the due time."""
    n = int(seconds * rate / batch)
    payloads = [request_bytes(shape, [(i * batch + j) * 7919 % shape["rows"] for j in range(batch)], port) for i in range(min(n, 512))]
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    lat: list[float] = []
    errors: list[tuple[float, str]] = []
    ok_at: list[float] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05

    dropped = [0]

    async def one(i: int) -> None:
        due = t0 + i * batch / rate
        conn = await pool.get()
        if loop.time() - due > DROP_AFTER_S:   # over capacity: count it and keep the run bounded
            dropped[0] += 1
            pool.put_nowait(conn)
            return
        try:
            status, body = await _exchange(*conn, payloads[i % len(payloads)])
            if status != 200 or b'"values":[null' in body.replace(b" ", b""):
                errors.append((due - t0, f"HTTP {status}"))
            else:
                lat.append((loop.time() - due) * 1000)
                ok_at.append(due - t0)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors.append((due - t0, type(exc).__name__))
            conn[1].close()
            conn = await asyncio.open_connection("127.0.0.1", port)
        pool.put_nowait(conn)

    tasks = []
    for i in range(n):
        due = t0 + i * batch / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if on_tick:
            on_tick(due - t0)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {"latencies_ms": lat, "errors": errors, "ok_at": ok_at, "elapsed": loop.time() - t0, "requests": n,
            "dropped": dropped[0]}


def schedstat(pid: int) -> tuple[float, float]:
    """(CPU seconds of the whole process, seconds its main thread, the event loop, waited on a run queue)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")      # utime + stime, threads included
    wait = int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    return cpu, wait


def server_timings(url: str) -> list[float]:
    with urllib.request.urlopen(url + "/_timings", timeout=10) as resp:  # noqa: S310 - loopback
        return list(json.loads(resp.read())["ms"])


def summary(res: dict, batch: int) -> dict:
    lat = res["latencies_ms"]
    return {"requests": res["requests"], "ok": len(lat), "errors": len(res["errors"]), "dropped": res.get("dropped", 0),
            "lookups_per_s": round(len(lat) * batch / max(res["elapsed"], 1e-9)),
            "p50_ms": round(pct(lat, 0.5), 2), "p99_ms": round(pct(lat, 0.99), 2)}


def recovery(res: dict, kill_at: float) -> dict:
    """Errors after the kill, and the time from the kill to the first success after the last error."""
    errs = [t for t, _ in res["errors"] if t >= kill_at - 0.5]
    back = min((t for t in res["ok_at"] if t > max(errs, default=kill_at)), default=float("nan"))
    return {"errors": len(errs), "first_error_s": round(min(errs) - kill_at, 2) if errs else None,
            "recovered_after_s": round(back - kill_at, 2), "kinds": sorted({k for _, k in res["errors"]})[:4]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="500,2000", help="lookups/s, comma-separated (default 500,2000)")
    ap.add_argument("--batches", default="1,10", help="entities per request, comma-separated (default 1,10)")
    ap.add_argument("--seconds", type=float, default=6.0, help="per view, batch and rate (default 6)")
    ap.add_argument("--rows", type=int, default=20000, help="entities materialized per view (default 20000)")
    ap.add_argument("--failover-rate", type=float, default=200.0, help="lookups/s during the failover run (default 200)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--memory", action="store_true", help="only measure Redis bytes per entity against infra.features.row_bytes")
    args = ap.parse_args()
    why = feast_rig.missing()
    if why:
        print("cannot run: " + "; ".join(why), file=sys.stderr)
        return 2
    if args.memory:
        return memory(args.rows)
    rates = [float(r) for r in args.rates.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    local = load_environment("local").feature_views
    views = [*local, next(v for v in load_environment("prod").feature_views if v.name == "user-features-000")]
    out: dict = {"machine": {"cpus": os.cpu_count(), "load_before": round(os.getloadavg()[0], 2)}, "rows": args.rows,
                 "seconds": args.seconds, "runs": [], "failover": {}}
    with tempfile.TemporaryDirectory(prefix="bench-feast-") as tmp:
        rig = feast_rig.Rig(Path(tmp), views, rows=args.rows)
        try:
            t = time.monotonic()
            rig.start_redis()
            rig.write_repo()
            rig.feast("apply")
            rig.worker("steps", {"steps": ["source", "materialize"], "views": rig.shapes()}, timeout=600)
            url = rig.serve(timed=True)
            print(f"set-up {time.monotonic() - t:.1f} s (redis + sentinels, apply, {args.rows} rows x {len(views)} views, server)")
            combos = [(shape, batch, rate) for shape in rig.shapes() for batch in batches for rate in rates]
            pid = rig.procs["serve"].pid
            for shape, batch, rate in combos:
                asyncio.run(http_load(rig.ports["serve"], shape, rate, WARMUP_S, batch))   # connections, caches: not counted
                server_timings(url)
                (cpu0, wait0), t0 = schedstat(pid), time.monotonic()
                http = asyncio.run(http_load(rig.ports["serve"], shape, rate, args.seconds, batch))
                (cpu1, wait1), elapsed = schedstat(pid), time.monotonic() - t0
                srv = server_timings(url)
                out["runs"].append({"view": shape["view"], "features": len(shape["features"]), "batch": batch, "rate": rate,
                                    "server": {"p50_ms": round(pct(srv, 0.5), 2), "p99_ms": round(pct(srv, 0.99), 2), "n": len(srv),
                                               "cpu_ms_per_request": round((cpu1 - cpu0) * 1000 / max(len(srv), 1), 2),
                                               "cpu_share": round((cpu1 - cpu0) / elapsed, 2),
                                               "runqueue_wait_ms_per_s": round((wait1 - wait0) * 1000 / elapsed)},
                                    "http": summary(http, batch)})
            sdk_runs = [{"view": shape, "rate": rate, "seconds": secs, "batch": batch}
                        for shape, batch, rate in combos for secs in (WARMUP_S, args.seconds)]
            sdk = rig.worker("lookups", {"runs": sdk_runs}, timeout=len(combos) * args.seconds * 10 + 60)
            for run, res, (_, batch, _) in zip(out["runs"], sdk["runs"][1::2], combos, strict=True):
                run["sdk"] = summary(res, batch)
            print(f"{'view':<18} {'feat':>4} {'batch':>5} {'lookups/s':>9}  {'server p50/p99':>15} {'cpu/req':>7} {'rq wait':>7}"
                  f"  {'HTTP client p50/p99 (achieved/s)':>34}  {'SDK p50/p99 (achieved/s)':>28}")
            for r in out["runs"]:
                print(f"{r['view']:<18} {r['features']:>4} {r['batch']:>5} {int(r['rate']):>9}  "
                      f"{r['server']['p50_ms']:>6.2f}/{r['server']['p99_ms']:>7.2f} ms  "
                      f"{r['server']['cpu_ms_per_request']:>5.2f}ms {r['server']['runqueue_wait_ms_per_s']:>4}ms/s  "
                      f"{r['http']['p50_ms']:>9.2f}/{r['http']['p99_ms']:>9.2f} ms ({r['http']['lookups_per_s']:>5}/s"
                      + (f", {r['http']['dropped']} dropped)" if r['http']['dropped'] else ")")
                      + f"  {r['sdk']['p50_ms']:>7.2f}/{r['sdk']['p99_ms']:>7.2f} ms ({r['sdk']['lookups_per_s']:>5}/s)")
            out["failover"] = failover(rig, url, args.failover_rate)
            print(f"failover at {args.failover_rate:g} lookups/s each over HTTP and the SDK: {json.dumps(out['failover'])}")
        finally:
            rig.close()
    out["machine"]["load_after"] = round(os.getloadavg()[0], 2)
    print(f"load average before/after: {out['machine']['load_before']}/{out['machine']['load_after']} on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def memory(rows: int) -> int:
    """Redis `used_memory` growth per entity when one view's rows are materialized, against the estimate that
    `entity_count` is checked with (each view alone: views sharing an entity share its Redis hash)."""
    env = load_environment("prod")
    views = [*load_environment("local").feature_views, next(v for v in env.feature_views if v.name == "user-features-000")]
    for view in views:
        with tempfile.TemporaryDirectory(prefix="bench-feast-mem-") as tmp:
            rig = feast_rig.Rig(Path(tmp), [view], rows=rows)
            try:
                rig.start_redis()
                rig.write_repo()
                rig.feast("apply")
                rig.worker("source", {"views": rig.shapes()})
                before = rig.used_memory()
                rig.worker("materialize", {"views": rig.shapes()})
                measured = (rig.used_memory() - before) / rows
            finally:
                rig.close()
        estimate = row_bytes(view.model_copy(update={"ttl_seconds": 0}))   # the rig's keys have no TTL
        print(f"{view.name:<18} {len(view.features):>3} features  measured {measured:7.1f} B/entity  "
              f"estimate {estimate} B ({(estimate - measured) / measured:+.1%})")
    return 0


def failover(rig: feast_rig.Rig, url: str, rate: float, seconds: float = 12.0, kill_at: float = 4.0) -> dict:
    """HTTP and SDK lookups at `rate` each, side by side from one wall-clock instant; the primary is SIGKILLed
    `kill_at` s in. Recovery: from the kill to the first success after the last error."""
    shape = rig.shapes()[0]
    rig.sync_replica()
    start = time.time() + 15.0          # the SDK worker's imports take seconds on a busy machine
    sdk_result: dict = {}

    def sdk() -> None:
        sdk_result.update(rig.worker("lookups", {"view": shape, "rate": rate, "seconds": seconds, "batch": 1,
                                                 "start_at_wall": start}, timeout=seconds * 10 + 60))

    thread = threading.Thread(target=sdk)
    thread.start()
    time.sleep(max(0.0, start - time.time()))
    killed: dict = {}

    def tick(t: float) -> None:
        if not killed and t >= kill_at:
            killed.update(at=t, wall=time.time())
            rig.kill("primary")

    http = asyncio.run(http_load(rig.ports["serve"], shape, rate, seconds, 1, conns=8, on_tick=tick))
    thread.join()
    calm = [ms for ms, t in zip(http["latencies_ms"], http["ok_at"], strict=True) if not kill_at - 0.5 <= t <= kill_at + 5]
    return {"rate": rate, "promoted": rig.master_port() == rig.ports["replica"],
            "http": recovery(http, killed["at"]),
            "sdk": recovery(sdk_result, killed["wall"] - sdk_result["t0_wall"]) if sdk_result else {},
            "http_p99_ms_outside_failover": round(pct(calm, 0.99), 2)}


if __name__ == "__main__":
    sys.exit(main())
