"""`hybridml preview SPEC`: the Pulumi program offline under mocks (hybridml/ops/preview.py, sharded as
`hybridml up` deploys: hybridml/ops/preview_shards.py), or with --engine through the engine."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hybridml.cli.output import SPEC_HELP, console, err_console, fail, load
from infra.errors import HybridmlError, SpecError, SpecIssue


def preview(
    spec: str = typer.Argument(..., help=SPEC_HELP),
    out: Path | None = typer.Option(None, "--out", help="Write every Kubernetes object as YAML: DIR/<site>.yaml."),
    mode: str = typer.Option("cloud", help="cloud (EKS + on-prem clusters) or local (local control planes)."),
    sites: str | None = typer.Option(None, "--sites", help="Comma-separated sites (a shard); default all."),
    plan_file: Path | None = typer.Option(None, "--plan", help="Use this plan JSON instead of solving."),
    engine: bool = typer.Option(False, "--engine", help="Preview through the real Pulumi engine instead: SPEC is "
                                "then an environment (Pulumi.<env>.yaml) and every site stack and the fleet stack "
                                "run `pulumi preview` (Automation API), like `hybridml up`."),
    parallel: int | None = typer.Option(None, "--parallel", min=1, help="How many stacks run at once: "
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
        from hybridml.cli.rollout import run_rollout

        run_rollout(spec, "preview", sites=sites, parallel=parallel or 4, plan_file=plan_file,
                    expect_no_changes=expect_no_changes, monolithic=monolithic, skip_unchanged=skip_unchanged,
                    json_out=json_out)
        return
    load(spec)  # spec errors: exit 2 with file:line before anything runs
    if mode not in ("cloud", "local"):
        fail(SpecError("--mode", [SpecIssue(("--mode",), f"must be cloud or local (got {mode!r})")]))
    site_list = [s.strip() for s in sites.split(",") if s.strip()] if sites else None
    if monolithic:
        from hybridml.ops.preview import run_preview

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
        from hybridml.ops.preview import write_manifests

        written = write_manifests(manifests, out)
        console.print(f"wrote {sum(written.values())} Kubernetes objects to {out}/ "
                      f"({', '.join(f'{s}.yaml: {n}' for s, n in written.items())})")


def _preview_sharded(spec: str, mode: str, sites: list[str] | None, plan_file: Path | None,
                     parallel: int | None, want_manifests: bool) -> dict[str, list[dict]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hybridml.ops.preview_shards import run_sharded_preview
    from hybridml.ops.shards import ShardError

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
