"""`hybridml`: the command line. The typer app and the commands it has, each in a module of hybridml/cli/.

Only hybridml/cli/ prints and picks exit codes (hybridml/cli/output.py): 0 ok, 1 infeasible plan or
policy failure, 2 bad input.
"""
from __future__ import annotations

import typer

from hybridml.cli import bootstrap, check, local, plan, preflight, preview, rollout, status
from hybridml.cli.output import fail
from infra.errors import HybridmlError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Infrastructure as code for ML inference on a hybrid fleet.")

app.command()(plan.validate)
app.command()(plan.plan)
app.command()(preview.preview)
app.command()(preflight.preflight)
app.command()(check.check)
app.command("bootstrap")(bootstrap.bootstrap)
app.command("up")(rollout.up)
app.command("destroy")(rollout.destroy)
app.command("status")(status.status)
app.add_typer(local.app, name="local")


def main() -> None:  # pragma: no cover - console script shim
    try:
        app()
    except HybridmlError as exc:
        fail(exc)
