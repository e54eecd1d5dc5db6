"""The `hybridml` command line: the top room of `hybridml/`.

- `output`: the one printer (rich consoles), `fail` (a HybridmlError -> message + exit code), exit codes;
- `app`: the typer app; one module per command or group (plan, preview, preflight, check, rollout,
  status, bootstrap, tenant, local).

May import every room below it: hybridml/ops (what the commands do), hybridml/stack, hybridml/local, the
Pulumi program (through ops) and the rooms upstream of hybridml/. Nothing imports the CLI.
"""
from __future__ import annotations

from hybridml.cli.app import app, main

__all__ = ["app", "main"]
