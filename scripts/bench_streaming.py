#!/usr/bin/env python3
"""Streaming freshness, measured: the shipped PyFlink job (workloads/streaming) on a bounded synthetic stream, pushing
through Feast's feature server (https) into Redis with Sentinel, at fixed rates side by side in one run.

    .venv/bin/python scripts/bench_streaming.py [--view item-stats] [--rates 200,1000] [--seconds 10] [--flush-ms 50]
                                                [--json FILE]

One rig (tools/flink_rig.py): loopback Redis primary + replica + three Sentinels (TLS only, the cluster's files), the
repository generated from the spec, `feast apply`, `feast serve` over https with one worker. Per rate, one run of the
job with the arguments of the FlinkDeployment rendered for the view (source: the synthetic stream, `rate` rows/s for
`seconds`; each record stamped with the time it was due, so a late record's lateness counts), Flink's own JIT
settings. Meanwhile tools/stream_watch.py reads the online store through Feast's SDK every 5 ms and notes when each
row first became readable: freshness = that time - the row's event time (one poll of resolution: 5 ms + one read).
Rows/s: rows readable per second, first to last. Needs scripts/feast_venv.sh, scripts/flink_venv.sh, redis-server, java.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infra.loader import load_environment  # noqa: E402
from tools import flink_rig  # noqa: E402
from tools.flink_rig import percentile  # noqa: E402
from workloads.streaming import rows as stream_rows  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--view", default="item-stats", help="a streaming view of the local spec")
    ap.add_argument("--rates", default="200,1000", help="rows/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--flush-ms", type=int, default=None, help="the job's flush interval (default: the rendered one)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    why = flink_rig.missing()
    if why:
        print("cannot run: " + "; ".join(why), file=sys.stderr)
        return 2
    view = next((v for v in load_environment("local").feature_views if v.name == a.view and v.streaming), None)
    if view is None:
        print(f"--view: {a.view!r} is no streaming view of the local spec", file=sys.stderr)
        return 2
    rates = [float(r) for r in a.rates.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f}; view {view.name} ({len(view.features)} features)", flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rig = flink_rig.StreamRig(Path(tmp), [view])
        try:
            rig.start()
            first = flink_rig.FIRST_ENTITY
            for rate in rates:
                n = int(rate * a.seconds)
                changes = {"synthetic_first": first} | ({"flush_ms": a.flush_ms} if a.flush_ms else {})
                cfg = rig.config(view, n, rate, **changes)
                first += n
                load = os.getloadavg()[0]
                meter = flink_rig.CpuMeter()
                for name in ("serve-tls", "primary"):
                    meter.watch(name, rig.base.procs[name].pid)
                stream = rig.stream(view, cfg, job_timeout=a.seconds + 240, meter=meter)
                cpu = meter.stop()
                if stream.job.returncode:
                    print(f"rate {rate:g}: the job failed:\n{stream.job.output[-3000:]}", file=sys.stderr)
                    return 1
                sample = list(range(cfg.synthetic_first, cfg.synthetic_first + n, max(1, n // 200)))
                status, got = rig.read_back(view, cfg, sample)
                wrong = sum(1 for i, e in enumerate(sample)
                            if {k: got[k][i] for k in stream_rows.synthetic_features(cfg, e)} != stream_rows.synthetic_features(cfg, e))
                fresh = stream.freshness_ms
                results.append({"rate": rate, "rows": n, "readable": len(stream.seen), "missing": stream.missing_count,
                                "measured": len(fresh), "p50_ms": percentile(fresh, 50), "p99_ms": percentile(fresh, 99),
                                "max_ms": fresh[-1] if fresh else float("nan"), "rows_per_s": stream.rows_per_s,
                                "job_s": stream.job.seconds, "load_before": load, "sample_checked": len(sample),
                                "sample_wrong": wrong if status == 200 else len(sample), "flush_ms": cfg.flush_ms,
                                "cpu_s": {k: round(v, 2) for k, v in cpu.items()}})
                print(f"rate {rate:g} rows/s done: {results[-1]}", flush=True)
                time.sleep(1)
        finally:
            rig.close()
    print("\n| offered rows/s | rows | readable | freshness p50 / p99 / max | rows/s readable | job wall (JVM start incl.) "
          "| CPU s: job / feature server / Redis primary / watcher |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rate']:,.0f} | {r['rows']:,} | {r['readable']:,} (values checked: {r['sample_checked'] - r['sample_wrong']}/"
              f"{r['sample_checked']}) | {r['p50_ms']:.0f} / {r['p99_ms']:.0f} / {r['max_ms']:.0f} ms | {r['rows_per_s']:,.0f} | "
              f"{r['job_s']:.1f} s | {r['cpu_s']['job']:.1f} / {r['cpu_s']['serve-tls']:.1f} / {r['cpu_s']['primary']:.1f} / "
              f"{r['cpu_s']['watcher']:.1f} |")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
