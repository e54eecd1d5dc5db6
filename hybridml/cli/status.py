"""`hybridml status ENV`: one view across every cluster of an environment, compared with its plan.

Registered in hybridml/cli/app.py. The plan: `--plan FILE`, else
`.local/plans/<env>.json` when it exists (written by the rollout driver), else solved from the spec.
Clusters: `--kubeconfig` (default `hybridml.local.state_dir_for(env)/kubeconfig`), context
`hybridml-<site>` per site unless `--context SITE=CTX`. The comparison is hybridml/ops/status.py (pure);
reading the clusters is hybridml/ops/observe.py (`observe_fleet`, replaceable in tests).

Exit codes: 0 healthy, 1 anything off (unready or missing replicas, misplaced pods, privacy-zone
violations, an unreachable cluster the plan uses, negative latency headroom), 2 bad input.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NoReturn

import typer
from rich.table import Table

from hybridml.cli.output import console, err_console, fail, load
from hybridml.ops.observe import observe_fleet  # tests replace this module attribute with a fake observer
from infra.errors import SpecError, SpecIssue

SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "dim"}
MAX_FINDINGS = 40
"""Findings listed in the table without --all (the sim fleet can have hundreds; --json has every one)."""
STATE_STYLE = {"ok": "green", "declared": "cyan", "degraded": "red", "missing": "red", "unreachable": "red",
               "misplaced": "red"}


def default_plan_path(env_name: str) -> Path:
    from hybridml.stack.planfile import plan_path

    return plan_path(env_name)


def default_kubeconfig(env_name: str) -> Path:
    from hybridml.local.paths import state_dir_for

    return state_dir_for(env_name) / "kubeconfig"


def _bad(file: str, field: str, reason: str) -> NoReturn:
    fail(SpecError(file, [SpecIssue((field,), reason)]))


def _load_plan(env, path: Path, field: str):
    from hybridml.stack.planfile import read_plan_for

    try:
        return read_plan_for(env, path, field=field, strict=True)
    except SpecError as exc:
        fail(exc)


def default_context(site: str) -> str:
    """clusters.local_cluster.default_context, without importing Pulumi (~1 s); a test keeps them equal."""
    return f"hybridml-{site}"


def _contexts(env, overrides: list[str]) -> dict[str, str]:
    out = {s.name: default_context(s.name) for s in env.sites}
    for item in overrides:
        site, sep, ctx = item.partition("=")
        if not sep or not site or not ctx:
            _bad("--context", "--context", f"expected SITE=CONTEXT (got {item!r})")
        if site not in out:
            _bad("--context", "--context", f"no site {site!r} in {env.name} (sites: {', '.join(out)})")
        out[site] = ctx
    return out


def status(
    env_arg: str = typer.Argument(..., metavar="ENV",
                                  help="Environment: a shipped name (local, sim, dev, prod) or a spec path."),
    plan_file: Path | None = typer.Option(None, "--plan", help="Placement plan JSON (hybridml plan SPEC --json "
                                             "FILE). Default: .local/plans/<env>.json if present, else solve."),
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig with one context per site. "
                                              "Default: the environment's local state dir (.local/kubeconfig for local)."),
    context: list[str] = typer.Option([], "--context", help="SITE=CONTEXT (repeatable); default hybridml-<site>."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON only."),
    pipelines: str | None = typer.Option(None, "--pipelines", help="Comma-separated pipelines to report on."),
    show_all: bool = typer.Option(False, "--all", help="List every pipeline, not only those with a problem."),
) -> None:
    """Fleet status: desired vs ready replicas, capacity, misplaced pods, privacy violations, latency headroom."""
    from hybridml.ops.status import build_report

    t0 = time.monotonic()
    env = load(env_arg)
    wanted = None
    if pipelines:
        wanted = {p.strip() for p in pipelines.split(",") if p.strip()}
        unknown = sorted(wanted - {p.name for p in env.pipelines})
        if unknown:
            _bad("--pipelines", "--pipelines", f"no pipeline {', '.join(unknown)} in {env.name}")
    contexts = _contexts(env, context)
    if kubeconfig is not None and not kubeconfig.is_file():
        _bad(str(kubeconfig), "--kubeconfig", "no such file")
    kc = kubeconfig or default_kubeconfig(env.name)

    if plan_file is not None:
        plan, source = _load_plan(env, plan_file, "--plan"), str(plan_file)
    elif default_plan_path(env.name).is_file():
        path = default_plan_path(env.name)
        plan, source = _load_plan(env, path, "plan"), str(path)
    else:
        from infra.errors import PlacementInfeasible
        from policies.placement import solve

        try:
            plan, source = solve(env), "solved from the spec"
        except PlacementInfeasible as exc:
            fail(exc)

    if kc.is_file():
        fleet = observe_fleet(kc, contexts)
    else:
        from hybridml.ops.observe import ClusterObservation, FleetObservation

        fleet = FleetObservation({s: ClusterObservation(s, c, False, f"kubeconfig {kc} does not exist")
                                  for s, c in contexts.items()})
    t1 = time.monotonic()
    report = build_report(env, plan, fleet, plan_source=source, pipelines=wanted)
    compare_s = time.monotonic() - t1

    if json_out:
        data = report.to_dict()
        data["timings"] = {"fetch_seconds": round(fleet.fetch_seconds, 3), "compare_seconds": round(compare_s, 3),
                           "total_seconds": round(time.monotonic() - t0, 3)}
        typer.echo(json.dumps(data, indent=2))
    else:
        _print(console, err_console, report, show_all=show_all, compare_s=compare_s, total_s=time.monotonic() - t0)
    if not report.ok:
        raise typer.Exit(1)


def _frac(used: float, cap: float, fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(used)}/{fmt.format(cap)}"


def _gpus(s) -> str:
    types = sorted(set(s.gpus_capacity) | set(s.gpus_used) | set(s.gpus_planned))
    return ", ".join(f"{t} {s.gpus_used.get(t, 0)}/{s.gpus_capacity.get(t, 0)} (plan {s.gpus_planned.get(t, 0)})"
                     for t in types) or "-"


def _print_batch(console, rows) -> None:
    table = Table(title=f"batch pipelines ({len(rows)}; Ray)", title_justify="left")
    for col in ("batch pipeline", "engine", "tier", "when", "workers ready/planned", "sites: object, state (operator)", "state"):
        table.add_column(col, justify="right" if col.startswith("workers") else "left", overflow="fold")
    for b in rows:
        per_site = "; ".join(f"{s.site}: {s.kind} {s.name or '-'} {s.workers_ready}/{s.workers_planned}"
                             + (f" ({s.detail})" if s.detail else "") for s in b.sites.values())
        style = "green" if b.ok else ("yellow" if b.state in ("starting", "failed") else "red")
        table.add_row(b.name, b.engine, b.privacy_tier, b.schedule or "one-off", f"{b.workers_ready}/{b.workers_planned}",
                      per_site, f"[{style}]{b.state}[/]")
    console.print(table)


def _print(console, err_console, report, *, show_all: bool, compare_s: float, total_s: float) -> None:
    sites = Table(title=f"fleet status: {report.environment} (plan: {report.plan_source})", title_justify="left")
    for col in ("site", "kind", "cluster", "pipelines ready", "replicas ready", "pods run/active",
                "GPUs used/cap", "cores used/cap (plan)", "nodes ready", "fetch"):
        sites.add_column(col, justify="left" if col in ("site", "kind", "cluster", "GPUs used/cap") else "right")
    for s in report.sites:
        if not s.reachable:
            style = "red" if s.planned else "yellow"
            sites.add_row(s.name, s.kind, f"[{style}]unreachable[/]", f"-/{s.pipelines_planned}", f"-/{s.desired}",
                          "-", "-", "-", "-", f"{s.fetch_seconds:.2f}s")
            continue
        piped = f"{s.pipelines_ready}/{s.pipelines_planned}" + (f" (+{s.pipelines_declared} declared)"
                                                                 if s.pipelines_declared else "")
        pods = f"{s.pods_running}/{s.pods}" + (f" [red]{s.pods_pending} pending[/]" if s.pods_pending else "")
        sites.add_row(s.name, s.kind, s.context + (" (simulated)" if s.simulated else ""), piped,
                      f"{s.ready}/{s.desired}", pods, _gpus(s),
                      f"{_frac(s.cores_used, s.cores_capacity, '{:,.1f}')} ({s.cores_planned:,.1f})",
                      f"{s.nodes_ready}/{s.nodes}", f"{s.fetch_seconds:.2f}s")
    console.print(sites)

    rows = [p for p in report.pipelines if show_all or not p.ok]
    if rows:
        table = Table(title=f"pipelines ({len(rows)} of {len(report.pipelines)}"
                            + (")" if show_all else " with a problem; --all lists every one)"), title_justify="left")
        for col in ("pipeline", "engine", "tier", "ready/desired", "sites (ready/desired)", "p99 SLO",
                    "worst routed", "headroom", "live", "state"):
            table.add_column(col, justify="right" if col in ("ready/desired", "p99 SLO", "worst routed", "headroom",
                                                             "live") else "left")
        for p in rows:
            per_site = ", ".join(f"{r.site} {r.ready}/{r.desired}" + ("" if r.state == "ok" else f" {r.state}")
                                 for r in p.sites.values())
            def ms(v):
                return ("-" if v is None else f"{v:,.0f} ms")
            state = p.state
            if not p.ok and state in ("ok", "declared"):
                state = "misplaced" if any(r.state == "misplaced" for r in p.sites.values()) else "latency"
            table.add_row(p.name, p.engine, p.privacy_tier, f"{p.ready}/{p.desired}", per_site, ms(p.slo_p99_ms),
                          ms(p.worst_latency_ms), ms(p.headroom_ms), ms(p.live_headroom_ms),
                          f"[{STATE_STYLE.get(state, 'red')}]{state}[/]")
        console.print(table)
    else:
        declared = sum(1 for p in report.pipelines if p.state == "declared")
        console.print(f"[green]all {len(report.pipelines)} pipelines ok[/]"
                      + (f" ({len(report.pipelines) - declared} ready, {declared} declared: see findings)" if declared
                         else "") + "; --all lists them")

    if report.batch:
        _print_batch(console, report.batch)

    if report.findings:
        shown = report.findings if show_all else report.findings[:MAX_FINDINGS]
        more = len(report.findings) - len(shown)
        by_kind: dict[str, int] = {}
        for f in report.findings:
            by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
        table = Table(title=f"findings ({len(report.errors)} error(s): "
                            + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
                            + (f"; first {len(shown)} shown, --all or --json for every one)" if more else ")"),
                      title_justify="left")
        for col in ("severity", "kind", "site", "pipeline", "finding"):
            table.add_column(col, overflow="fold")
        for f in shown:
            table.add_row(f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]", f.kind, f.site or "-", f.pipeline or "-",
                          f.message)
        (err_console if not report.ok else console).print(table)

    nodes = sum(s.nodes for s in report.sites)
    pods = sum(s.pods for s in report.sites)
    console.print(f"read {sum(1 for s in report.sites if s.reachable)}/{len(report.sites)} clusters ({nodes:,} nodes, "
                  f"{pods:,} active pods) in {report.fetch_seconds:.2f} s; compared in {compare_s:.2f} s; "
                  f"total {total_s:.2f} s", highlight=False)
    if report.simulated:
        console.print("note: GPUs and racks are simulated (nodes labelled hybridml.io/simulated=true are kwok "
                      "fake nodes; no container runs)", highlight=False)
    if report.ok:
        console.print(f"[green]healthy[/]: {report.environment} matches its plan")
    else:
        err_console.print(f"[bold red]not healthy[/]: {len(report.errors)} error(s)")
