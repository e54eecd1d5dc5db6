"""`hybridml check SPEC`: the policy gate for CI, offline and without cloud credentials."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from hybridml.cli.output import console, err_console, fail
from infra.errors import HybridmlError


def check(
    spec: str = typer.Argument(..., help="Environment spec: a YAML path or a shipped name (local, dev, prod)."),
    plan_file: Path | None = typer.Option(None, "--plan", help="Check this saved plan (hybridml plan --json) "
                                             "instead of solving again."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the findings as JSON."),
    show_advisory: bool = typer.Option(False, "--advisory", help="Also list advisory findings one by one."),
) -> None:
    """Run the program under mocks and apply every policy rule; exit 1 on any mandatory violation."""
    from hybridml.ops.check import run_check
    from hybridml.stack.planfile import read_plan

    plan = None
    if plan_file is not None:
        try:
            plan = read_plan(plan_file, field="--plan")
        except HybridmlError as exc:
            fail(exc)
    with console.status("building the program under mocks and checking every resource..."):
        try:
            report = run_check(spec, plan=plan)
        except HybridmlError as exc:
            fail(exc)
    if json_out:
        json_out.write_text(json.dumps([f.__dict__ for f in report.findings], indent=2))
    mandatory, advisory = report.mandatory, report.advisory
    if mandatory:
        table = Table(title=f"policy violations: {report.environment}", title_justify="left", show_lines=False)
        for col in ("rule", "resource", "cluster", "violation", "fix"):
            table.add_column(col, overflow="fold")
        for f in mandatory:
            table.add_row(*(Text(cell) for cell in (f.rule, f.resource, f.cluster or "-", f.message, f.fix)))
        err_console.print(table)
    if show_advisory:
        for f in advisory:
            console.print(f"advisory {f.rule}: {f.resource}: {f.message} (fix: {f.fix})", markup=False,
                          highlight=False)
    by_rule: dict[str, int] = {}
    for f in advisory:
        by_rule[f.rule] = by_rule.get(f.rule, 0) + 1
    console.print(f"checked {report.resources} resources of {report.environment} against the policy rules in "
                  f"{report.seconds:.1f} s: {len(mandatory)} mandatory violation(s), {len(advisory)} advisory"
                  + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(by_rule.items()))})" if by_rule else ""))
    if mandatory:
        raise typer.Exit(1)
