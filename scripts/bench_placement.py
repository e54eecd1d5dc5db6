#!/usr/bin/env python3
"""Placement benchmark: the prod spec and a generated 10x fleet, side by side in one run.

Prints, per spec: size, solve time, cost, cloud nodes bought, root-LP bound and gap, HiGHS proven gap,
the greedy on-prem-first baseline, the optimal/greedy cost ratio, and whether every site's pods pack into
its nodes by first-fit decreasing (`packs`; solve() checks it too).

    python scripts/bench_placement.py [--scale 10] [--time-limit 120]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infra.loader import load_environment, parse_environment  # noqa: E402
from policies.placement import solve  # noqa: E402
from policies.placement.greedy import greedy_baseline  # noqa: E402
from policies.placement.packing import packing_problems  # noqa: E402
from tools.generate import generate  # noqa: E402


def measure(label: str, env, time_limit: float, mip_gap: float) -> dict:
    t0 = time.perf_counter()
    plan = solve(env, time_limit=time_limit, mip_gap=mip_gap)
    solve_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = greedy_baseline(env)
    greedy_s = time.perf_counter() - t0
    gpus = sum(sum(s.gpus_used.values()) for s in plan.sites)
    cores = sum(s.cores_used for s in plan.sites)
    proven = (plan.cost_usd_per_hour and max(0.0, 1 - plan.dual_bound_usd_per_hour / plan.cost_usd_per_hour))
    nodes = sum(sum(s.nodes.values()) for s in plan.sites)
    return dict(spec=label, pipelines=len(env.pipelines), gpus=gpus, cores=round(cores), status=plan.status,
                solve_s=round(solve_s, 2), cost=plan.cost_usd_per_hour, nodes=nodes, lp_bound=plan.lp_bound_usd_per_hour,
                gap_lp_pct=round(plan.gap_to_lp * 100, 3), proven_gap_pct=round(proven * 100, 3),
                greedy=base.cost_usd_per_hour if base.feasible else None, greedy_s=round(greedy_s, 2),
                ratio=(round(plan.cost_usd_per_hour / base.cost_usd_per_hour, 4) if base.feasible else None),
                packs=not packing_problems(env, plan))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--time-limit", type=float, default=120)
    ap.add_argument("--mip-gap", type=float, default=0.005)
    args = ap.parse_args()
    rows = [measure("prod", load_environment("prod"), args.time_limit, args.mip_gap)]
    t0 = time.perf_counter()
    big = parse_environment(yaml.safe_dump(generate("prod", args.scale), sort_keys=False), f"prod-x{args.scale}")
    print(f"generated and validated prod x{args.scale} in {time.perf_counter() - t0:.1f} s", flush=True)
    rows.append(measure(f"prod x{args.scale}", big, args.time_limit, args.mip_gap))
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    a, b = rows
    print(f"ratio x{args.scale}/prod: solve time {b['solve_s'] / a['solve_s']:.1f}x for "
          f"{b['pipelines'] / a['pipelines']:.0f}x pipelines; optimal/greedy {a['ratio']} (prod), {b['ratio']} (x{args.scale})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
