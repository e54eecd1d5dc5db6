"""`hybridml`: the command line. The typer app and the commands it has, each in a module of hybridml/cli/.

Only hybridml/cli/ prints and picks exit codes (hybridml/cli/output.py): 0 ok, 1 infeasible plan or
policy failure, 2 bad input.
"""
from __future__ import annotations

import typer

from hybridml.cli.bootstrap import bootstrap
from hybridml.cli.check import check
from hybridml.cli.dataplane import app as dataplane_app
from hybridml.cli.local import app as local_app
from hybridml.cli.output import fail
from hybridml.cli.plan import plan, validate
from hybridml.cli.preflight import preflight
from hybridml.cli.preview import preview
from hybridml.cli.rollout import destroy, up
from hybridml.cli.status import status
from hybridml.cli.tenant import tenant_key
from infra.errors import HybridmlError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Infrastructure as code for ML inference on a hybrid fleet.")

app.command()(validate)
app.command()(plan)
app.command()(preview)
app.command()(preflight)
app.command()(check)
app.command()(bootstrap)
app.command()(up)
app.command()(destroy)
app.command()(status)
app.command("tenant-key")(tenant_key)
app.add_typer(local_app, name="local")
local_app.add_typer(dataplane_app, name="dataplane")


def main() -> None:  # pragma: no cover - console script shim
    try:
        app()
    except HybridmlError as exc:
        fail(exc)
