"""`hybridml`: the command line. The only place that prints and picks exit codes.

Exit codes: 0 ok, 1 infeasible plan or policy failure, 2 bad input.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from infra.errors import HybridmlError, PlacementInfeasible, SpecError, SpecIssue

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Infrastructure as code for ML inference on a hybrid fleet.")
# Pipes and CI logs get a wide console, so tables stay one row per site.
console = Console() if Console().is_terminal else Console(width=160)
err_console = Console(stderr=True, soft_wrap=True) if Console(stderr=True).is_terminal else \
    Console(stderr=True, soft_wrap=True, width=160)

SPEC_HELP = "Environment spec: a YAML path, or a shipped environment name (local, dev, prod)."


def fail(exc: HybridmlError) -> None:
    """Print a library error the way users should see it, and exit with its code."""
    if isinstance(exc, SpecError):
        err_console.print(f"[bold red]error:[/] invalid spec {exc.file}", highlight=False)
        for issue in exc.issues:
            err_console.print(f"  {issue.render(exc.file)}", highlight=False, markup=False)
        err_console.print("  hint: hybridml validate SPEC checks a spec without solving; nothing was deployed.",
                          highlight=False)
    elif isinstance(exc, PlacementInfeasible):
        err_console.print(f"[bold red]infeasible:[/] no placement meets every constraint ({len(exc.reasons)} reason(s))")
        for r in exc.reasons:
            who = f"pipeline {r.pipeline}" if r.pipeline else "fleet"
            err_console.print(f"  - {who}: [{r.constraint}] {r.detail}", highlight=False, markup=False)
            if r.hint:
                err_console.print(f"    fix: {r.hint}", highlight=False, markup=False)
    else:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(exc.exit_code)


def load(spec: str):
    from infra.loader import load_environment

    try:
        return load_environment(spec)
    except SpecError as exc:
        fail(exc)


@app.command()
def validate(spec: str = typer.Argument(..., help=SPEC_HELP)) -> None:
    """Check a spec: schema, references across the file, RTTs. Exit 2 with file:line: field: reason."""
    env = load(spec)
    gpus = sum(1 for p in env.pipelines if p.gpu)
    console.print(f"[green]ok[/] {env.name}: {len(env.sites)} sites ({len(env.cloud_sites)} cloud, "
                  f"{len(env.datacenters)} datacenters), {len(env.pipelines)} pipelines ({gpus} on GPUs), "
                  f"{len(env.user_regions)} user regions, {len(env.tenants)} tenants")


@app.command()
def plan(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the plan (with explanations) as JSON."),
    explain: Optional[str] = typer.Option(None, "--explain", help="Explain the decision for one pipeline."),
    svg: Optional[Path] = typer.Option(None, "--svg", help="Draw the placement across sites as an SVG picture."),
    time_limit: float = typer.Option(60.0, help="Solver time limit in seconds."),
    mip_gap: Optional[float] = typer.Option(
        None, help="Stop when within this relative gap of the proven bound [default: 0.005, as the Pulumi program]."),
    baseline: bool = typer.Option(True, help="Also compute the greedy on-prem-first baseline for comparison."),
) -> None:
    """Solve placement: which site runs how many replicas of every pipeline, at minimum cost."""
    from policies.placement import solve
    from policies.placement.greedy import greedy_baseline

    env = load(spec)
    if explain is not None and explain not in {p.name for p in env.pipelines}:
        fail(SpecError(spec, [SpecIssue(("--explain",), f"no pipeline named {explain!r} in {env.name}")]))
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
        from hybridml.render import placement_svg

        svg.write_text(placement_svg(env, result))
        console.print(f"picture written to {svg}")
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
    console.print("explain one decision: hybridml plan SPEC --explain PIPELINE")


def _print_explanation(p) -> None:
    console.print(f"[bold]{p.name}[/] ({p.engine}, {p.privacy_tier}): {p.explanation.summary}, "
                  f"${p.cost_usd_per_hour:,.3f}/h")
    console.print("chosen:")
    for line in p.explanation.chosen:
        console.print(f"  + {line}", markup=False, highlight=False)
    console.print("rejected:")
    for site, why in p.explanation.rejected.items():
        console.print(f"  - {site}: {why}", markup=False, highlight=False)
    console.print("binding constraints:")
    for line in p.explanation.binding or ["(none: the cheapest eligible sites had room)"]:
        console.print(f"  * {line}", markup=False, highlight=False)
    console.print("routing (region -> site share, failover order):")
    for region, row in p.routing.items():
        shares = ", ".join(f"{s} {x * 100:.0f}%" for s, x in row.items())
        console.print(f"  {region}: {shares}; failover {' > '.join(p.failover.get(region, []))}",
                      markup=False, highlight=False)


# --------------------------------------------------------------------------- clusters: preview, preflight
# (issue 3) Self-contained: the logic lives in hybridml/preview.py and clusters/preflight.py.


@app.command()
def preview(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    out: Optional[Path] = typer.Option(None, "--out", help="Write every Kubernetes object as YAML: DIR/<site>.yaml."),
    mode: str = typer.Option("cloud", help="cloud (EKS + on-prem clusters) or local (local control planes)."),
    sites: Optional[str] = typer.Option(None, "--sites", help="Comma-separated sites (a shard); default all."),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="Use this plan JSON instead of solving."),
    engine: bool = typer.Option(False, "--engine", help="Preview through the real Pulumi engine instead: SPEC is "
                                "then an environment (Pulumi.<env>.yaml) and every site stack and the fleet stack "
                                "run `pulumi preview` (Automation API), like `hybridml up`."),
    parallel: Optional[int] = typer.Option(None, "--parallel", min=1, help="How many stacks run at once: "
                                           "processes offline (default: one per CPU), engines with --engine "
                                           "(default 4)."),
    expect_no_changes: bool = typer.Option(False, "--expect-no-changes", help="--engine: fail on any change."),
    skip_unchanged: bool = typer.Option(False, "--skip-unchanged", help="--engine: report a stack `same` "
                                        "without running the engine when its inputs (config, source, spec, plan, "
                                        "SDKs; the fleet stack's site outputs) fingerprint equals the one its last "
                                        "successful update exported. Does not look for drift on the live cluster."),
    json_out: bool = typer.Option(False, "--json", help="--engine: print the result as JSON."),
    monolithic: bool = typer.Option(False, "--monolithic", help="The whole-environment stack (<env>, `pulumi up "
                                    "--stack <env>`) in one process, instead of the site stacks and the fleet "
                                    "stack `hybridml up` deploys. Both build the same Kubernetes objects."),
) -> None:
    """Preview the Pulumi program: offline under Pulumi's mocks (default: resource counts per type per
    cluster, no credentials needed), or with --engine through the engine on the environment's stacks."""
    if engine:
        from hybridml.commands.rollout import run_rollout

        run_rollout(spec, "preview", sites=sites, parallel=parallel or 4, plan_file=plan_file,
                    expect_no_changes=expect_no_changes, monolithic=monolithic, skip_unchanged=skip_unchanged,
                    json_out=json_out)
        return
    load(spec)  # spec errors: exit 2 with file:line before anything runs
    if mode not in ("cloud", "local"):
        fail(SpecError("--mode", [SpecIssue(("--mode",), f"must be cloud or local (got {mode!r})")]))
    site_list = [s.strip() for s in sites.split(",") if s.strip()] if sites else None
    if monolithic:
        from hybridml.preview import run_preview

        try:
            with console.status("running the program under mocks..."):
                result = run_preview(spec, mode=mode, sites=site_list,
                                     plan_file=str(plan_file) if plan_file else None)
        except HybridmlError as exc:
            fail(exc)
        _print_preview_counts(result.environment, result.count, result.sites, result.counts())
        console.print(f"{result.count} resources built in {result.build_seconds:.2f} s "
                      f"({result.resources_per_second:,.0f} resources/s; "
                      f"{result.resources_per_cpu_second:,.0f} per CPU second; "
                      f"plan {result.plan_seconds:.2f} s, total {result.total_seconds:.2f} s)")
        manifests = result.kubernetes_manifests() if out else {}
    else:
        manifests = _preview_sharded(spec, mode, site_list, plan_file, parallel, want_manifests=out is not None)
    if out:
        from hybridml.preview import write_manifests

        written = write_manifests(manifests, out)
        console.print(f"wrote {sum(written.values())} Kubernetes objects to {out}/ "
                      f"({', '.join(f'{s}.yaml: {n}' for s, n in written.items())})")


def _preview_sharded(spec: str, mode: str, sites: list[str] | None, plan_file: Path | None,
                     parallel: int | None, want_manifests: bool) -> dict[str, list[dict]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hybridml.preview_shards import run_sharded_preview
    from hybridml.shards import ShardError

    # Redrawn on each finished stack, not by rich's refresh thread: the workers are forked, and a fork
    # must not copy a lock that thread may hold at that moment.
    progress = Progress(TextColumn("previewing stacks under mocks"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=console, transient=True,
                        auto_refresh=False)
    with progress:
        task = progress.add_task("stacks", total=None, last="solving placement...")
        progress.refresh()

        def stack_done(outcome) -> None:
            progress.update(task, advance=1, last=f"{outcome.stack}: "
                            + ("[red]failed[/]" if outcome.error else f"{outcome.count} resources"))
            progress.refresh()

        try:
            result = run_sharded_preview(spec, mode=mode, sites=sites, plan_file=str(plan_file) if plan_file else None,
                                         workers=parallel, want_manifests=want_manifests, on_stack_done=stack_done,
                                         on_stacks=lambda n: progress.update(task, total=n, last=""))
        except ShardError as exc:
            fail(SpecError("--sites", [SpecIssue(("--sites",), str(exc))]))
        except HybridmlError as exc:
            fail(exc)
    _print_preview_counts(result.environment, result.count, result.sites, result.counts())
    for stack in result.failed:
        err_console.print(f"[bold red]error:[/] stack {stack.stack}: {stack.error}", highlight=False)
    ok = len(result.stacks) - len(result.failed)
    console.print(f"{result.count} resources in {ok} stacks built in {result.build_seconds:.2f} s on "
                  f"{result.workers} processes ({result.resources_per_second:,.0f} resources/s; "
                  f"{result.resources_per_cpu_second:,.0f} per CPU second); plan {result.plan_seconds:.2f} s, "
                  f"total {result.total_seconds:.2f} s")
    if result.failed:
        raise typer.Exit(1)
    return result.manifests()


def _print_preview_counts(environment: str, count: int, sites: list[str], counts: dict) -> None:
    table = Table(title=f"preview: {environment} ({count} resources)", title_justify="left")
    for col in ("cluster", "type", "count"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for site in [*sites, *sorted(set(counts) - set(sites))]:
        rows = counts.get(site)
        if not rows:
            continue
        for i, (typ, n) in enumerate(sorted(rows.items())):
            table.add_row(site if i == 0 else "", typ, str(n))
        table.add_row("", f"[bold]{site} total[/]", f"[bold]{sum(rows.values())}[/]")
        table.add_section()
    console.print(table)


@app.command()
def preflight(spec: str = typer.Argument(..., help=SPEC_HELP),
              plan_file: Optional[Path] = typer.Option(None, "--plan", help="Use this plan JSON instead of solving.")
              ) -> None:
    """Check with AWS (boto3) that the plan's instance types are offered and vCPU quotas cover it."""
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    from clusters.preflight import run_preflight
    from hybridml.program import load_plan

    env = load(spec)
    try:
        placement = load_plan(env, str(plan_file) if plan_file else None)
    except HybridmlError as exc:
        fail(exc)
    try:
        report = run_preflight(env, placement)
    except (NoCredentialsError, BotoCoreError) as exc:
        err_console.print(f"[bold red]error:[/] AWS: {exc}", highlight=False)
        err_console.print("  hint: set AWS credentials (AWS_PROFILE or aws sso login); nothing was checked.")
        raise typer.Exit(2)
    table = Table(title=f"preflight: {env.name} vCPU quotas", title_justify="left")
    for col in ("site", "region", "family", "plan needs", "Karpenter limit", "quota", "spec says", "status"):
        table.add_column(col, justify="left" if col in ("site", "region", "family", "status") else "right")
    for q in report.quotas:
        ok = q.quota is not None and q.quota >= q.need
        table.add_row(q.site, q.region, q.family, str(q.need), str(q.limit),
                      "?" if q.quota is None else str(q.quota), "-" if q.spec_quota is None else str(q.spec_quota),
                      "[green]ok[/]" if ok else "[red]SHORT[/]")
    console.print(table)
    for f in report.warnings:
        console.print(f"[yellow]warning[/] {f.region} ({f.site}): {f.detail}", highlight=False)
    if report.ok:
        console.print("[green]ok[/] every instance type is offered and every quota covers the plan")
        return
    shortfalls = Table(title="shortfalls", title_justify="left")
    for col in ("region", "site", "kind", "what", "detail"):
        shortfalls.add_column(col, overflow="fold")
    for f in report.shortfalls:
        shortfalls.add_row(f.region, f.site, f.kind, f.subject, f.detail)
    err_console.print(shortfalls)
    raise typer.Exit(1)


def _register_commands() -> None:
    """Commands whose code lives in hybridml/commands/ (each file one command or group)."""
    from hybridml.commands.bootstrap import bootstrap
    from hybridml.commands.check import check
    from hybridml.commands.local import app as local_app
    from hybridml.commands.rollout import destroy as rollout_destroy
    from hybridml.commands.rollout import up as rollout_up
    from hybridml.commands.status import status

    app.command()(check)
    app.command("bootstrap")(bootstrap)
    app.command("up")(rollout_up)
    app.command("destroy")(rollout_destroy)
    app.command("status")(status)
    app.add_typer(local_app, name="local")


_register_commands()


def main() -> None:  # pragma: no cover - console script shim
    try:
        app()
    except HybridmlError as exc:
        fail(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
