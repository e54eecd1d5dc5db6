"""`hybridml up ENV`, `hybridml destroy ENV` and `hybridml preview ENV --engine`: the environment's
site stacks and fleet stack through the Pulumi Automation API (hybridml/ops/rollout.py), in parallel and
in dependency order, with live per-stack progress and a summary.

Exit codes: 0 every stack succeeded, 1 a stack failed (the others still ran; its error is shown),
2 bad input (unknown environment or site, unreadable plan, missing stack config).
"""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from hybridml.cli.output import console, err_console, fail
from hybridml.ops.shards import DEFAULT_RESOURCE_PARALLEL, DEFAULT_RETRIES, ShardError, checkpoint_mode
from infra.errors import HybridmlError, SpecError, SpecIssue

ENV_HELP = "Environment: the name of its stack config Pulumi.<env>.yaml (local, sim, dev, prod)."
SITES_HELP = "Comma-separated sites: roll out only their stacks (then the fleet stack); default every used site."
PARALLEL_HELP = "How many stacks run at once."
RESOURCE_PARALLEL_HELP = "Resource operations in flight per stack (pulumi --parallel; the CLI's own default is 4 per core)."
CHECKPOINTS_HELP = ("When the engine writes each stack's state: every-step (Pulumi's default; auto), final (once at "
                    "the end: much less engine CPU on big stacks; a run killed outright loses its record of every "
                    "object it made, and the next up takes them all over).")
RETRIES_HELP = ("Run a stack again this many times after a transient API-server error (timeouts of an "
                "overloaded control plane); 0 to fail at once.")
STATE_STYLE = {"waiting": "dim", "running": "yellow", "ok": "green", "failed": "bold red", "skipped": "magenta"}


def _table(runs, action: str, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("stack", "role", "state", "steps" if action != "preview" else "planned", "changes", "time", "detail"):
        table.add_column(col, overflow="fold", justify="right" if col in ("steps", "planned", "time") else "left")
    for r in runs:
        changes = ", ".join(f"{k} {v}" for k, v in sorted(r.changes.items())) or "-"
        detail = r.error if r.error else (r.last if r.state == "running" else r.note)
        if r.retries:
            detail = f"(ran again {r.retries}x after a transient error) {detail}".strip()
        table.add_row(r.name, r.role, f"[{STATE_STYLE.get(r.state, '')}]{r.state}[/]", str(r.steps), changes,
                      f"{r.seconds:.0f} s" if r.seconds else "", detail)
    return table


def run_rollout(environment: str, action: str, *, sites: str | None, parallel: int, plan_file: Path | None,
                expect_no_changes: bool = False, remove: bool = False, monolithic: bool = False,
                json_out: bool = False, checkpoints: str = "auto", resource_parallel: int = DEFAULT_RESOURCE_PARALLEL,
                retries: int = DEFAULT_RETRIES, skip_unchanged: bool = False) -> None:
    from hybridml.ops.rollout import rollout

    for flag, value in (("--parallel", parallel), ("--resource-parallel", resource_parallel)):
        if value < 1:
            fail(SpecError(flag, [SpecIssue((flag,), f"must be at least 1 (got {value})")]))
    if retries < 0:
        fail(SpecError("--retries", [SpecIssue(("--retries",), f"must be 0 or more (got {retries})")]))
    try:
        checkpoint_mode(checkpoints)
    except ShardError as exc:
        fail(SpecError("--checkpoints", [SpecIssue(("--checkpoints",), str(exc))]))
    if plan_file is not None and not plan_file.is_file():
        fail(SpecError(str(plan_file), [SpecIssue(("--plan",), "no such plan file")]))
    title = f"hybridml {action} {environment}" + (" (monolithic stack)" if monolithic else " (site stacks, then fleet)")
    from hybridml.ops.rollout import LOG_DIR
    from hybridml.stack.config import project_dir

    log_dir = project_dir() / LOG_DIR / f"{environment}-{action}"
    live = Live(_table([], action, title), console=console, refresh_per_second=4, transient=False,
                auto_refresh=False) if not json_out else None

    def on_tick(runs) -> None:
        if live is not None:
            live.update(_table(runs, action, title), refresh=True)

    try:
        if live is not None:
            live.start()
        result = rollout(environment, action, sites=sites.split(",") if sites else None,  # type: ignore[arg-type]
                         parallel=parallel, plan_file=str(plan_file) if plan_file else None,
                         expect_no_changes=expect_no_changes, remove=remove, monolithic=monolithic,
                         checkpoints=checkpoints, resource_parallel=resource_parallel, retries=retries, on_tick=on_tick,
                         log_dir=log_dir, skip_unchanged=skip_unchanged)
    except HybridmlError as exc:
        if live is not None:
            live.stop()
        fail(exc)
    except (ValueError, OSError) as exc:
        if live is not None:
            live.stop()
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        if live is not None and live.is_started:
            live.stop()
    if json_out:
        console.print_json(json.dumps(result.to_json()))
    else:
        ok = sum(1 for s in result.stacks if s.ok)
        steps = sum(s.steps for s in result.stacks)
        console.print(f"{action} {environment}: {ok}/{len(result.stacks)} stacks ok in {result.seconds:.1f} s "
                      f"({steps} resource steps, {steps / max(result.seconds, 1e-9):.0f}/s); plan {result.plan_path}; "
                      f"checkpoints {result.checkpoints}; "
                      f"engine logs in {log_dir}/")
        for s in result.stacks:
            if not s.ok:
                err_console.print(f"[bold red]{s.name}[/] {s.state}: {s.error} (log: {log_dir}/{s.name}.log)",
                                  highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def up(
    environment: str = typer.Argument(..., help=ENV_HELP),
    sites: str | None = typer.Option(None, "--sites", help=SITES_HELP),
    parallel: int = typer.Option(4, "--parallel", help=PARALLEL_HELP),
    plan_file: Path | None = typer.Option(None, "--plan", help="Deploy this plan JSON instead of solving."),
    monolithic: bool = typer.Option(False, "--monolithic", help="One stack for the whole environment (<env>)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON (no live table)."),
    checkpoints: str = typer.Option("auto", "--checkpoints", help=CHECKPOINTS_HELP),
    resource_parallel: int = typer.Option(DEFAULT_RESOURCE_PARALLEL, "--resource-parallel", help=RESOURCE_PARALLEL_HELP),
    retries: int = typer.Option(DEFAULT_RETRIES, "--retries", help=RETRIES_HELP),
) -> None:
    """Deploy the environment: every site stack in parallel, then the fleet stack."""
    run_rollout(environment, "up", sites=sites, parallel=parallel, plan_file=plan_file, monolithic=monolithic,
                json_out=json_out, checkpoints=checkpoints, resource_parallel=resource_parallel, retries=retries)


def destroy(
    environment: str = typer.Argument(..., help=ENV_HELP),
    sites: str | None = typer.Option(None, "--sites", help=SITES_HELP),
    parallel: int = typer.Option(4, "--parallel", help=PARALLEL_HELP),
    remove: bool = typer.Option(False, "--remove", help="Also remove the emptied stacks."),
    monolithic: bool = typer.Option(False, "--monolithic", help="Destroy the whole-environment stack (<env>)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON (no live table)."),
    checkpoints: str = typer.Option("auto", "--checkpoints", help=CHECKPOINTS_HELP),
    resource_parallel: int = typer.Option(DEFAULT_RESOURCE_PARALLEL, "--resource-parallel", help=RESOURCE_PARALLEL_HELP),
    retries: int = typer.Option(DEFAULT_RETRIES, "--retries", help=RETRIES_HELP),
) -> None:
    """Destroy the environment: the fleet stack first, then the site stacks in parallel."""
    run_rollout(environment, "destroy", sites=sites, parallel=parallel, plan_file=None, remove=remove,
                monolithic=monolithic, json_out=json_out, checkpoints=checkpoints, resource_parallel=resource_parallel,
                retries=retries)
