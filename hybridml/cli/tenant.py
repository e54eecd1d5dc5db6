"""`hybridml tenant-key ENV TENANT`: the API key a tenant sends to the entry gateways of an environment.

The program derives every tenant's key from the stack's secret seed (workloads/render/edge_auth.py) and puts it in
each entry site's `tenant-api-keys` Secret; this command derives it the same way, from `hybridml:secretSeed` of
Pulumi.<ENV>.yaml (a `secure:` value, decrypted through the Pulumi engine), or, when that stack sets none and runs on
simulated clusters (mode local), from the seed the program then falls back to. With --dataplane, ENV is a spec (a
shipped name or a file) and the key is the one `hybridml local dataplane up ENV` serves: its offline render always
runs on simulated clusters.

Prints the key alone on stdout (`KEY=$(hybridml tenant-key local support-bot)`); how to send it goes to stderr.
Exit codes: 0 ok, 2 unknown environment or tenant, or a cloud stack that has no secret seed (so no keys) yet.
"""
from __future__ import annotations

import os

import typer

from hybridml.cli.output import EXIT_BAD_INPUT, abort, err_console, fail, load
from infra.errors import HybridmlError

ENV_HELP = ("Environment: the name of its stack config Pulumi.<env>.yaml (local, sim, dev, prod); with --dataplane a "
            "spec (shipped name or file).")
DATAPLANE_HELP = "The key of the local data path (`hybridml local dataplane up ENV`), which renders on simulated clusters."


def _stack_seed(environment: str) -> tuple[str, str]:
    """(seed, spec) of a stack, as the program resolves the seed (workloads/stack.py)."""
    from hybridml.stack.config import MODE, SECRET_SEED, SPEC, ConfigEntry, project_dir, read_stack_config

    config = read_stack_config(environment)
    spec = config[SPEC].value
    if not os.path.isabs(spec) and (project_dir() / spec).exists():
        spec = str(project_dir() / spec)   # stack config paths are relative to the project
    mode = config.get(MODE, ConfigEntry("cloud")).value
    entry = config.get(SECRET_SEED)
    if entry is None:
        if mode != "local":
            abort(f"Pulumi.{environment}.yaml sets no {SECRET_SEED}: `pulumi up` refuses to deploy without one, so its "
                  f"tenants have no keys yet (set it: pulumi config set --secret {SECRET_SEED.split(':', 1)[1]} "
                  "\"$(openssl rand -base64 32)\" --stack " + environment + ")", EXIT_BAD_INPUT)
        from workloads.stack import LOCAL_SEED

        return LOCAL_SEED, spec
    if not entry.secret:
        return entry.value, spec
    from pulumi import automation as auto

    from hybridml.ops.rollout import decrypt_secrets, pulumi_environment

    env_vars = pulumi_environment(mode)
    os.environ.update(env_vars)   # the Automation API runs the CLI with this process's environment
    try:
        workspace = auto.LocalWorkspace(work_dir=str(project_dir()), env_vars=env_vars)
        return decrypt_secrets(environment, {SECRET_SEED: entry}, workspace)[SECRET_SEED].value, spec
    except auto.errors.CommandError as exc:
        abort(f"could not decrypt {SECRET_SEED} of Pulumi.{environment}.yaml: {' '.join(str(exc).split())[-600:]}",
              EXIT_BAD_INPUT)


def tenant_key(environment: str = typer.Argument(..., help=ENV_HELP),
               tenant: str = typer.Argument(..., help="The tenant, as the spec's `tenants:` names it."),
               dataplane: bool = typer.Option(False, "--dataplane", help=DATAPLANE_HELP)) -> None:
    """Print TENANT's API key for ENV's entry gateways (send it as `Authorization: Bearer KEY` or `x-api-key: KEY`)."""
    from workloads.render.edge_auth import tenant_api_key

    try:
        if dataplane:
            from workloads.stack import LOCAL_SEED

            seed, spec = LOCAL_SEED, environment
        else:
            seed, spec = _stack_seed(environment)
    except HybridmlError as exc:
        fail(exc, hint=None)
    env = load(spec)
    names = [t.name for t in env.tenants]
    if tenant not in names:
        abort(f"{env.name} has no tenant {tenant!r} (tenants: {', '.join(names) or 'none'})", EXIT_BAD_INPUT)
    typer.echo(tenant_api_key(seed, tenant))
    err_console.print(f"{tenant} of {env.name}: send it to any entry host as `Authorization: Bearer <key>` or "
                      "`x-api-key: <key>`", highlight=False)
