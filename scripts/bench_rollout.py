#!/usr/bin/env python3
"""Sharded vs monolithic rollout of the simulated fleet, measured side by side in one run (issue 8).

    .venv/bin/python scripts/bench_rollout.py                       # sim: every site, both layouts
    .venv/bin/python scripts/bench_rollout.py --sites aws-use1,dc-ashburn --parallel 2
    .venv/bin/python scripts/bench_rollout.py --skip-monolithic --keep   # the whole fleet, sharded, left up

Both layouts deploy the same objects from the same plan file onto the same local control planes
(`hybridml local up ENV` first; GPUs and racks are SIMULATED by kwok):
  monolithic  one stack `<env>-bench-mono` holding the selected sites (hybridml:sites = all of them)
  sharded     one stack per site `<env>-<site>`, run `--parallel` at a time (hybridml/rollout.py)
For each: wall time of `up` from empty, resources per second, time until every pod on the clusters is
Running (and the CPU the control planes and the Pulumi processes used until then), a no-op `preview`,
then destroy (the monolith always; the shards unless --keep). After the
sharded up: kube-apiserver mutating-call p99 per cluster (its /metrics, the Kubernetes SLO is 1 s).
The fleet stack is left out of both (it adds the same small directory to either). Prints ratios.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from hybridml.ops.shards import DEFAULT_RESOURCE_PARALLEL  # noqa: E402

console = Console()


def pods_running(env_name: str, sites: list[str]) -> tuple[int, int]:
    """(Running, all) pods outside kube-system over the sites' clusters."""
    from hybridml.local.controlplane import api_client
    from hybridml.local.fromspec import cluster_name
    from hybridml.local.paths import state_dir_for

    running = total = 0
    for site in sites:
        api = api_client(cluster_name(site), state_dir_for(env_name))
        try:
            cont = ""
            while True:
                page = api.get("/api/v1/pods?limit=2000" + (f"&continue={cont}" if cont else ""))
                for p in page["items"]:
                    if p["metadata"]["namespace"] == "kube-system":
                        continue
                    phase = (p.get("status") or {}).get("phase")
                    if phase == "Succeeded":
                        continue
                    total += 1
                    running += phase == "Running"
                cont = page["metadata"].get("continue") or ""
                if not cont:
                    break
        finally:
            api.close()
    return running, total


def wait_running(env_name: str, sites: list[str], t0: float, timeout: float) -> float | None:
    """Seconds from t0 until every pod is Running (None on timeout)."""
    while time.monotonic() - t0 < timeout:
        running, total = pods_running(env_name, sites)
        if total and running == total:
            return time.monotonic() - t0
        console.print(f"  pods Running: {running}/{total}", highlight=False)
        time.sleep(5)
    return None


def _own_cpu() -> float:
    """CPU seconds of this process and of every child it has waited for: the Pulumi CLIs the rollout runs,
    and what they waited for (engines, language hosts, programs, providers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(environment: str, action: str, layout, parallel: int, label: str, plan: str, checkpoints: str,
        resource_parallel: int) -> dict:
    from hybridml.ops.rollout import rollout

    t0 = time.monotonic()
    with console.status(f"{label}: {action} ..."):
        result = rollout(environment, action, parallel=parallel, stacks=layout, plan_file=plan, checkpoints=checkpoints,
                         resource_parallel=resource_parallel,
                         log_dir=REPO / ".local" / "rollout-logs" / f"bench-{label}-{action}")
    seconds = time.monotonic() - t0
    steps = sum(s.steps for s in result.stacks)
    failed = [f"{s.name}: {s.error}" for s in result.stacks if not s.ok]
    if failed:
        raise SystemExit(f"{label} {action} failed: " + "; ".join(failed))
    return {"seconds": seconds, "steps": steps, "resources": sum(s.resources for s in result.stacks),
            "stacks": len(result.stacks), "changes": [s.changes for s in result.stacks]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="sim", help="environment (Pulumi.<env>.yaml, mode local)")
    ap.add_argument("--sites", help="comma-separated sites (default: every site the plan uses)")
    ap.add_argument("--parallel", type=int, default=4, help="site stacks at once")
    ap.add_argument("--skip-monolithic", action="store_true", help="measure the sharded rollout only")
    ap.add_argument("--keep", action="store_true", help="leave the sharded rollout deployed")
    ap.add_argument("--checkpoints", default="auto", choices=("auto", "every-step", "final"),
                    help="engine checkpoint policy for both layouts (hybridml up --checkpoints)")
    ap.add_argument("--resource-parallel", type=int, default=DEFAULT_RESOURCE_PARALLEL,
                    help="resource operations in flight per stack (hybridml up --resource-parallel)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds to wait for pods Running")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from hybridml.local.controlplane import api_client
    from hybridml.local.fromspec import cluster_name
    from hybridml.local.paths import state_dir_for
    from hybridml.local.sites import up_local
    from hybridml.ops.shards import StackSpec
    from hybridml.stack.config import SITES, ConfigEntry
    from tools.sim_metrics import component_cpu_seconds, fetch_metrics, mutating_latency

    console.print(f"[bold]bench_rollout[/] {args.env}: GPUs and racks are SIMULATED (kwok nodes)")
    t0 = time.monotonic()
    spec = REPO / "infra" / "environments" / f"{args.env}.yaml"
    up_local(spec, state_dir_for(args.env))
    console.print(f"control planes ready in {time.monotonic() - t0:.0f} s")

    def site_layout(specs: list[StackSpec]) -> list[StackSpec]:
        shards = [s for s in specs if s.role == "site"]
        wanted = args.sites.split(",") if args.sites else [s.sites[0] for s in shards]
        return [s for s in shards if s.sites[0] in wanted]

    def mono_layout(specs: list[StackSpec]) -> list[StackSpec]:
        shards = site_layout(specs)
        config = dict(shards[0].config)
        config[SITES] = ConfigEntry(json.dumps([s.sites[0] for s in shards]))
        return [StackSpec(name=f"{args.env}-bench-mono", role="site", sites=tuple(s.sites[0] for s in shards),
                          config=config)]

    # which sites (and their clusters) the run covers
    from hybridml.ops.rollout import prepare

    specs, plan, _, _ = prepare(args.env, "preview", None, None, with_fleet=False)   # solves once
    plan = str(REPO / plan) if plan and not Path(plan).is_absolute() else plan
    sites = [s.sites[0] for s in site_layout(specs)]
    console.print(f"sites: {', '.join(sites)}")
    figures: dict = {"environment": args.env, "sites": sites, "parallel": args.parallel, "checkpoints": args.checkpoints,
                     "resource_parallel": args.resource_parallel}

    baselines = {}
    for site in sites:
        api = api_client(cluster_name(site), state_dir_for(args.env))
        try:
            baselines[site] = fetch_metrics(api)
        finally:
            api.close()

    layouts = [] if args.skip_monolithic else [("monolithic", mono_layout, 1)]
    layouts.append(("sharded", site_layout, args.parallel))
    for label, layout, parallel in layouts:
        t_up, cpu_before, pulumi_before = time.monotonic(), component_cpu_seconds(state_dir_for(args.env)), _own_cpu()
        up = run(args.env, "up", layout, parallel, label, plan, args.checkpoints, args.resource_parallel)
        running = wait_running(args.env, sites, t_up, args.timeout)
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in component_cpu_seconds(state_dir_for(args.env)).items()}
        cpu["pulumi (CLI, engines, programs, providers)"] = _own_cpu() - pulumi_before
        wall = time.monotonic() - t_up
        console.print(f"{label}: CPU from the start of up until every pod ran: {sum(cpu.values()):.0f} s in {wall:.0f} s "
                      f"wall ({sum(cpu.values()) / wall:.2f} cores busy on average): "
                      + ", ".join(f"{k} {v:.0f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])),
                      highlight=False)
        console.print(f"{label}: up {up['seconds']:.0f} s, {up['steps']} resources "
                      f"({up['steps'] / up['seconds']:.1f}/s); all pods Running after "
                      f"{running if running is None else round(running)} s")
        if label == "sharded":
            latency = {}
            for site in sites:
                api = api_client(cluster_name(site), state_dir_for(args.env))
                try:
                    latency[site] = mutating_latency(fetch_metrics(api), baselines[site])
                finally:
                    api.close()
                console.print(f"  {site}: {latency[site].summary()}", highlight=False)
            figures["apiserver"] = {s: r.to_dict() for s, r in latency.items()}
        preview = run(args.env, "preview", layout, parallel, label, plan, args.checkpoints, args.resource_parallel)
        console.print(f"{label}: no-op preview {preview['seconds']:.0f} s")
        figures[label] = {"up_s": up["seconds"], "resources": up["steps"], "stacks": up["stacks"],
                          "resources_per_s": up["steps"] / up["seconds"], "pods_running_s": running,
                          "pods": pods_running(args.env, sites)[1], "noop_preview_s": preview["seconds"],
                          "cpu_seconds": cpu,
                          "preview_changes": preview["changes"]}
        if label == "monolithic" or not args.keep:
            down = run(args.env, "destroy", layout, parallel, label, plan, args.checkpoints, args.resource_parallel)
            figures[label]["destroy_s"] = down["seconds"]
            console.print(f"{label}: destroy {down['seconds']:.0f} s")

    table = Table(title=f"rollout of {args.env} ({len(sites)} sites; simulated nodes)", title_justify="left")
    for col in ("layout", "stacks", "resources", "up (s)", "resources/s", "all pods Running (s)", "no-op preview (s)"):
        table.add_column(col, justify="right" if col != "layout" else "left")
    for label in ("monolithic", "sharded"):
        f = figures.get(label)
        if f:
            table.add_row(label, str(f["stacks"]), str(f["resources"]), f"{f['up_s']:.0f}", f"{f['resources_per_s']:.1f}",
                          "-" if f["pods_running_s"] is None else f"{f['pods_running_s']:.0f}",
                          f"{f['noop_preview_s']:.0f}")
    console.print(table)
    if "monolithic" in figures:
        m, s = figures["monolithic"], figures["sharded"]
        figures["speedup_up"] = m["up_s"] / s["up_s"]
        figures["speedup_preview"] = m["noop_preview_s"] / s["noop_preview_s"]
        console.print(f"sharded vs monolithic: up {figures['speedup_up']:.2f}x faster, no-op preview "
                      f"{figures['speedup_preview']:.2f}x faster (goal >= 5x)")
    worst = max((r["p99_s"] for r in figures.get("apiserver", {}).values()), default=0.0)
    console.print(f"kube-apiserver mutating p99 (worst cluster): {worst * 1000:.0f} ms (SLO 1000 ms)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
