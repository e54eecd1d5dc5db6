"""`hybridml up|destroy ENV` refuses bad input with exit 2 before any engine starts (hybridml/commands/rollout.py)."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from hybridml.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "needle"), [
    (["up", "local", "--parallel", "0"], "--parallel: must be at least 1 (got 0)"),
    (["up", "local", "--resource-parallel", "0"], "--resource-parallel: must be at least 1 (got 0)"),
    (["destroy", "local", "--resource-parallel", "-3"], "--resource-parallel: must be at least 1 (got -3)"),
    (["up", "local", "--checkpoints", "sometimes"], "must be one of auto, every-step, final (got 'sometimes')"),
])
def test_bad_options_exit_2_naming_the_option(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())


def test_an_unknown_environment_exits_2_naming_its_stack_config():
    result = runner.invoke(app, ["up", "no-such-env"])
    assert result.exit_code == 2, result.output
    assert "Pulumi.no-such-env.yaml: no such stack config" in " ".join(result.output.split())
