"""`hybridml validate SPEC` and `hybridml plan SPEC`: check a spec; solve, draw and explain its placement."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hybridml.cli.output import SPEC_HELP, console, fail, load
from infra.errors import PlacementInfeasible, SpecError, SpecIssue


def validate(spec: str = typer.Argument(..., help=SPEC_HELP)) -> None:
    """Check a spec: schema, references across the file, RTTs. Exit 2 with file:line: field: reason."""
    env = load(spec)
    gpus = sum(1 for p in env.pipelines if p.gpu)
    console.print(f"[green]ok[/] {env.name}: {len(env.sites)} sites ({len(env.cloud_sites)} cloud, "
                  f"{len(env.datacenters)} datacenters), {len(env.pipelines)} pipelines ({gpus} on GPUs), "
                  f"{len(env.user_regions)} user regions, {len(env.tenants)} tenants")


def plan(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="Write the plan (with explanations) as JSON."),
    explain: str | None = typer.Option(None, "--explain", help="Explain the decision for one pipeline."),
    svg: Path | None = typer.Option(None, "--svg", help="Draw the placement across sites as an SVG picture."),
    time_limit: float = typer.Option(60.0, help="Solver time limit in seconds."),
    mip_gap: float | None = typer.Option(
        None, help="Stop when within this relative gap of the proven bound [default: 0.005, as the Pulumi program]."),
    baseline: bool = typer.Option(True, help="Also compute the greedy on-prem-first baseline for comparison."),
) -> None:
    """Solve placement: which site runs how many replicas of every pipeline, at minimum cost."""
    from policies.placement import solve
    from policies.placement.greedy import greedy_baseline

    env = load(spec)
    if explain is not None and explain not in {p.name for p in env.pipelines} | {b.name for b in env.batch.pipelines}:
        fail(SpecError(spec, [SpecIssue(("--explain",), f"no pipeline or batch pipeline named {explain!r} in {env.name}")]))
    with console.status(f"solving placement for {len(env.pipelines)} pipelines over {len(env.sites)} sites (HiGHS)..."):
        try:
            result = solve(env, time_limit=time_limit, **({} if mip_gap is None else {"mip_gap": mip_gap}))
        except PlacementInfeasible as exc:
            fail(exc)
        if baseline:
            result.baselines.append(greedy_baseline(env))
    if json_out:
        json_out.write_text(result.model_dump_json(indent=2))
        console.print(f"plan written to {json_out}")
    if svg:
        from hybridml.ops.placement_svg import placement_svg

        svg.write_text(placement_svg(env, result))
        console.print(f"picture written to {svg}")
    if explain and result.batch and explain in {b.name for b in result.batch.pipelines}:
        _print_batch_explanation(result.batch.pipeline(explain))
        return
    if explain:
        _print_explanation(result.pipeline(explain))
        return
    _print_plan(env, result)


def _print_plan(env, result) -> None:
    table = Table(title=f"placement: {result.environment}", title_justify="left")
    for col in ("site", "kind", "pipelines", "replicas", "GPUs used/cap", "cores used/cap", "nodes", "$/h"):
        table.add_column(col, justify="right" if col not in ("site", "kind", "nodes", "GPUs used/cap") else "left")
    for s in result.sites:
        gpus = ", ".join(f"{t} {n}/{s.gpus_capacity.get(t, '-')}" for t, n in sorted(s.gpus_used.items())) or "-"
        nodes = ", ".join(f"{n}x{t}" for t, n in sorted(s.nodes.items())) or ("own racks" if s.kind == "datacenter" else "-")
        table.add_row(s.name, s.kind, str(len(s.pipelines)), str(sum(s.pipelines.values())), gpus,
                      f"{s.cores_used:,.0f}/{s.cores_capacity:,.0f}", nodes, f"{s.cost_usd_per_hour:,.2f}")
    total_gpus = sum(sum(s.gpus_used.values()) for s in result.sites)
    table.add_section()
    table.add_row("total", "", str(len(result.pipelines)), str(sum(p.total_replicas for p in result.pipelines)),
                  f"{total_gpus} GPUs", f"{sum(s.cores_used for s in result.sites):,.0f}", "",
                  f"{result.cost_usd_per_hour:,.2f}")
    console.print(table)
    console.print(f"solver: {result.solver}, status {result.status}, {result.solve_seconds:.2f} s; "
                  f"cost ${result.cost_usd_per_hour:,.2f}/h; LP bound ${result.lp_bound_usd_per_hour:,.2f}/h "
                  f"(gap {result.gap_to_lp * 100:.2f} %); proven bound ${result.dual_bound_usd_per_hour:,.2f}/h")
    for b in result.baselines:
        if b.feasible and b.cost_usd_per_hour:
            console.print(f"baseline {b.name}: ${b.cost_usd_per_hour:,.2f}/h "
                          f"(optimal/greedy = {result.cost_usd_per_hour / b.cost_usd_per_hour:.3f})")
        else:
            console.print(f"baseline {b.name}: infeasible ({b.note})")
    if result.batch and result.batch.pipelines:
        _print_batch(result.batch)
    console.print("explain one decision: hybridml plan SPEC --explain PIPELINE")


def _print_batch(batch) -> None:
    table = Table(title="batch pipelines (second stage: the capacity the online plan leaves)", title_justify="left")
    for col in ("batch pipeline", "tier", "items", "window h", "needed/s", "planned/s", "workers", "where", "finish h", "$/run"):
        table.add_column(col, justify="left" if col in ("batch pipeline", "tier", "where") else "right")
    for b in batch.pipelines:
        where = ", ".join(f"{s.site} " + " + ".join(f"{n} {ct}" for ct, n in s.worker_groups.items()) for s in b.sites)
        table.add_row(b.name, b.privacy_tier, f"{b.items:,}", f"{b.window_hours:g}", f"{b.needed_items_per_s:,.1f}",
                      f"{b.planned_items_per_s:,.1f}", str(b.workers), where, f"{b.finish_hours:.2f}", f"{b.cost_usd_per_run:,.2f}")
    console.print(table)
    nodes = ", ".join(f"{n.site}: {n.nodes}x{n.instance_type} {n.capacity_type}" for n in batch.nodes) or "none"
    console.print(f"batch stage: {batch.solver}, status {batch.status}, {batch.solve_seconds:.2f} s; new cloud nodes while "
                  f"runs go: {nodes}")


def _print_decision(explanation, no_binding: str | None = None) -> None:
    """The chosen sites, the rejected ones with why, and the binding constraints of one explanation."""
    console.print("chosen:")
    for line in explanation.chosen:
        console.print(f"  + {line}", markup=False, highlight=False)
    console.print("rejected:")
    for site, why in explanation.rejected.items():
        console.print(f"  - {site}: {why}", markup=False, highlight=False)
    console.print("binding constraints:")
    for line in explanation.binding or ([no_binding] if no_binding else []):
        console.print(f"  * {line}", markup=False, highlight=False)


def _print_batch_explanation(b) -> None:
    when = f"schedule {b.schedule!r}" if b.schedule else "one-off"
    console.print(f"[bold]{b.name}[/] (batch, {b.engine}, {b.privacy_tier}, {when}): {b.explanation.summary}",
                  highlight=False)
    console.print(f"needs {b.needed_items_per_s:,.2f} items/s; plans {b.planned_items_per_s:,.2f} items/s with {b.workers} "
                  f"worker(s); finishes in {b.finish_hours:.2f} h of {b.window_hours:g} h", highlight=False)
    _print_decision(b.explanation)


def _print_explanation(p) -> None:
    console.print(f"[bold]{p.name}[/] ({p.engine}, {p.privacy_tier}): {p.explanation.summary}, "
                  f"${p.cost_usd_per_hour:,.3f}/h")
    _print_decision(p.explanation, "(none: the cheapest eligible sites had room)")
    console.print("routing (region -> site share, failover order):")
    for region, row in p.routing.items():
        shares = ", ".join(f"{s} {x * 100:.0f}%" for s, x in row.items())
        console.print(f"  {region}: {shares}; failover {' > '.join(p.failover.get(region, []))}",
                      markup=False, highlight=False)
