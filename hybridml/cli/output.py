"""The CLI's one printer and its exit codes. Nothing outside hybridml/cli/ prints; library code raises
`infra.errors.HybridmlError` subclasses, and `fail` turns each into what a user reads plus its exit code.

Exit codes: 0 ok, 1 infeasible plan, policy violation or a failed step, 2 bad input (nothing deployed).
"""
from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from infra.errors import HybridmlError, PlacementInfeasible, SpecError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

# Pipes and CI logs get a wide console, so tables stay one row per site. No emoji codes: rich would print
# `spec.yaml:100: field` as `spec.yaml💯 field` (":100:" is an emoji code), and user text may hold such codes.
console = Console(emoji=False) if Console().is_terminal else Console(width=160, emoji=False)
err_console = Console(stderr=True, soft_wrap=True, emoji=False) if Console(stderr=True).is_terminal else \
    Console(stderr=True, soft_wrap=True, width=160, emoji=False)

SPEC_HELP = "Environment spec: a YAML path, or a shipped environment name (local, dev, prod)."
SPEC_HINT = "hint: hybridml validate SPEC checks a spec without solving; nothing was deployed."


def fail(exc: HybridmlError, *, noun: str = "spec", hint: str | None = SPEC_HINT) -> NoReturn:
    """Print a library error the way users should see it, and exit with its code.

    `noun` names what was invalid ("spec", "input"); `hint` is the line after a spec error's issues."""
    if isinstance(exc, SpecError):
        err_console.print(f"[bold red]error:[/] invalid {noun} {escape(str(exc.file))}", highlight=False)
        for issue in exc.issues:
            err_console.print(f"  {issue.render(exc.file)}", highlight=False, markup=False)
        if hint:
            err_console.print(f"  {hint}", highlight=False)
    elif isinstance(exc, PlacementInfeasible):
        err_console.print(f"[bold red]infeasible:[/] no placement meets every constraint ({len(exc.reasons)} reason(s))")
        for r in exc.reasons:
            who = f"pipeline {r.pipeline}" if r.pipeline else "fleet"
            err_console.print(f"  - {who}: [{r.constraint}] {r.detail}", highlight=False, markup=False)
            if r.hint:
                err_console.print(f"    fix: {r.hint}", highlight=False, markup=False)
    else:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(exc.exit_code)


def abort(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print an error that is not a library error (an OS error, a refused option) and exit with `code`."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def fail_any(exc: BaseException, code: int) -> NoReturn:
    """fail() for a library error (its own exit code), else abort() with `code`."""
    if isinstance(exc, HybridmlError):
        fail(exc, hint=None)
    abort(str(exc), code)


def load(spec: str):  # noqa: ANN201 - infra.spec.Environment, imported lazily (pydantic models: ~0.3 s)
    """The environment of SPEC, or exit 2 with file:line: field: reason."""
    from infra.loader import load_environment

    try:
        return load_environment(spec)
    except SpecError as exc:
        fail(exc)
