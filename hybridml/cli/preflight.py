"""`hybridml preflight SPEC`: the plan's instance types and vCPU quotas checked with AWS (clusters/preflight.py)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hybridml.cli.output import SPEC_HELP, console, err_console, fail, load
from infra.errors import HybridmlError


def preflight(spec: str = typer.Argument(..., help=SPEC_HELP),
              plan_file: Path | None = typer.Option(None, "--plan", help="Use this plan JSON instead of solving.")
              ) -> None:
    """Check with AWS (boto3) that the plan's instance types are offered and vCPU quotas cover it."""
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    from clusters.preflight import run_preflight
    from hybridml.stack.planfile import load_plan

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
        raise typer.Exit(2) from None
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
