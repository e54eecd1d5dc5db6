"""`hybridml preflight ENV`: before `pulumi up`, what the accounts and clusters must already provide.

- cloud sites (clusters/preflight.py): the plan's instance types offered and vCPU quotas covering it, asked of AWS;
- datacenter sites (hybridml/ops/prerequisites.py): on each datacenter's live cluster, every prerequisite of the
  objects the program writes there: CRDs serving the apiVersions written, the objects they name that the program does
  not create (StorageClasses, Secrets, issuers), a default StorageClass, MetalLB's address pools.

Datacenter clusters are reached the way the program reaches them: `--kubeconfig` with a context per site
(`--context SITE=CTX`), else, for a local-mode stack, the local stack's kubeconfig (contexts `hybridml-<site>`), and for
a cloud-mode stack each datacenter's `hybridml:onpremKubeconfig-<dc>` secret read with `pulumi config get` (and its
`hybridml:onpremContext-<dc>`). Exit codes: 0 all present, 1 something missing (or a cluster unreachable), 2 bad input.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from hybridml.cli.output import EXIT_BAD_INPUT, SPEC_HELP, abort, console, err_console, fail, load
from infra.errors import HybridmlError

CHECKS = ("all", "aws", "datacenters")


def preflight(spec: str = typer.Argument(..., help=SPEC_HELP),
              plan_file: Path | None = typer.Option(None, "--plan", help="Use this plan JSON instead of solving."),
              check: str = typer.Option("all", "--check", help="What to check: aws, datacenters or all."),
              kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig of the datacenter clusters, "
                                                     "one context per site. Default: as the stack's program finds them."),
              context: list[str] = typer.Option([], "--context", help="SITE=CONTEXT (repeatable).")) -> None:
    """Check what the plan needs from AWS (instance offers, vCPU quotas) and from each datacenter's live cluster
    (CRDs, StorageClasses, Secrets, address pools)."""
    from hybridml.stack.planfile import load_plan

    if check not in CHECKS:
        _bad("--check", f"expected one of {', '.join(CHECKS)} (got {check!r})")
    env = load(spec)
    try:
        placement = load_plan(env, str(plan_file) if plan_file else None)
    except HybridmlError as exc:
        fail(exc)
    mode = _mode(spec)
    used = set(placement.used_sites())
    datacenters = [d.name for d in env.datacenters if d.name in used]
    code = 0
    if check in ("all", "aws"):
        if mode == "local":
            console.print("[dim]aws: skipped (a local-mode stack: its cloud sites are simulated)[/]")
        else:
            code = max(code, _aws(env, placement))
    if check in ("all", "datacenters"):
        if not datacenters:
            console.print("[dim]datacenters: the plan uses none[/]")
        else:
            code = max(code, _datacenters(spec, env, placement, mode, datacenters, kubeconfig, context))
    raise typer.Exit(code)


def _bad(field: str, reason: str) -> NoReturn:
    abort(f"{field}: {reason}", EXIT_BAD_INPUT)


def _is_stack(spec: str) -> bool:
    from hybridml.stack.config import project_dir

    return "/" not in spec and (project_dir() / f"Pulumi.{spec}.yaml").is_file()


def _mode(spec: str) -> str:
    """The stack's `hybridml:mode` where SPEC names a stack (Pulumi.<spec>.yaml), else cloud."""
    from hybridml.stack.config import MODE, StackConfigError, read_stack_config

    try:
        entry = read_stack_config(spec).get(MODE)
    except StackConfigError:
        return "cloud"
    return entry.value if entry is not None and entry.value else "cloud"


# --------------------------------------------------------------------------- AWS


def _aws(env, placement) -> int:
    from botocore.exceptions import BotoCoreError, NoCredentialsError

    from clusters.preflight import run_preflight

    try:
        report = run_preflight(env, placement)
    except (NoCredentialsError, BotoCoreError) as exc:
        err_console.print(f"[bold red]error:[/] AWS: {exc}", highlight=False)
        err_console.print("  hint: set AWS credentials (AWS_PROFILE or aws sso login), or --check datacenters; "
                          "nothing was checked.")
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
        return 0
    shortfalls = Table(title="shortfalls", title_justify="left")
    for col in ("region", "site", "kind", "what", "detail"):
        shortfalls.add_column(col, overflow="fold")
    for f in report.shortfalls:
        shortfalls.add_row(f.region, f.site, f.kind, f.subject, f.detail)
    err_console.print(shortfalls)
    return 1


# --------------------------------------------------------------------------- datacenters


def _contexts(datacenters: list[str], overrides: list[str], default) -> dict[str, str | None]:
    out = {dc: default(dc) for dc in datacenters}
    for item in overrides:
        site, sep, ctx = item.partition("=")
        if not sep or not site or not ctx:
            _bad("--context", f"expected SITE=CONTEXT (got {item!r})")
        if site not in out:
            _bad("--context", f"{site!r} is not a datacenter the plan uses ({', '.join(out)})")
        out[site] = ctx
    return out


def _stack_kubeconfig(spec: str, dc: str, workdir: Path) -> Path:
    """The datacenter's kubeconfig as the program reads it: the stack's secret, decrypted by the Pulumi CLI."""
    from hybridml.stack.config import onprem_kubeconfig_key, project_dir

    cmd = ["pulumi", "config", "get", onprem_kubeconfig_key(dc), "--stack", spec]
    try:
        out = subprocess.run(cmd, cwd=project_dir(), capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _bad("--kubeconfig", f"cannot run `{' '.join(cmd)}` ({exc}); pass --kubeconfig FILE with a context per datacenter")
    if out.returncode != 0 or not out.stdout.strip():
        _bad("--kubeconfig", f"`{' '.join(cmd)}` failed: {(out.stderr or out.stdout).strip()[:300]}; pass --kubeconfig "
                             "FILE with a context per datacenter")
    path = workdir / f"{dc}.kubeconfig"
    path.write_text(out.stdout)
    path.chmod(0o600)
    return path


def _datacenters(spec: str, env, placement, mode: str, datacenters: list[str], kubeconfig: Path | None,
                 context: list[str]) -> int:
    from hybridml.ops.check import program_views
    from hybridml.ops.prerequisites import missing, requirements
    from hybridml.ops.prerequisites_live import ClusterUnreachable, read_snapshot
    from hybridml.stack.config import onprem_context_key, read_stack_config

    if kubeconfig is not None and not kubeconfig.is_file():
        _bad("--kubeconfig", f"{kubeconfig}: no such file")
    if mode == "local":
        contexts = _contexts(datacenters, context, lambda dc: f"hybridml-{dc}")
    else:
        try:
            stack = read_stack_config(spec)
        except HybridmlError:
            stack = {}
        contexts = _contexts(datacenters, context, lambda dc: (
            stack[f"hybridml:{onprem_context_key(dc)}"].value if f"hybridml:{onprem_context_key(dc)}" in stack else None))
    views, _ = program_views(spec, plan=placement, mode=mode)
    table = Table(title=f"preflight: {env.name} datacenter prerequisites", title_justify="left")
    for col in ("site", "prerequisite", "status", "needed by", "fix"):
        table.add_column(col, overflow="fold")
    missing_count = 0
    with tempfile.TemporaryDirectory(prefix="hybridml-preflight-") as tmp:
        os.chmod(tmp, 0o700)
        for dc in datacenters:
            reqs = requirements(dc, views, simulated=mode == "local")
            if kubeconfig is not None:
                kc = kubeconfig
            elif mode == "local":
                from hybridml.local.paths import state_dir_for

                kc = state_dir_for(env.name) / "kubeconfig"
                if not kc.is_file():
                    _bad("--kubeconfig", f"{kc}: no such file (is the local stack up? `hybridml local up`)")
            elif _is_stack(spec):
                kc = _stack_kubeconfig(spec, dc, Path(tmp))
            else:
                _bad("--kubeconfig", f"{spec} names no stack (Pulumi.<env>.yaml) whose secrets hold {dc}'s kubeconfig: "
                                     "pass --kubeconfig FILE with a context per datacenter (--context SITE=CTX)")
            try:
                found = missing(reqs, read_snapshot(kc, contexts[dc], reqs))
            except ClusterUnreachable as exc:
                table.add_row(dc, "the cluster", "[red]UNREACHABLE[/]", "-", escape(str(exc)))
                missing_count += 1
                continue
            by_req = {id(m.requirement): m for m in found}
            for q in reqs:
                m = by_req.get(id(q))
                status = "[green]ok[/]" if m is None else f"[red]MISSING[/] {escape(m.reason)}"
                table.add_row(dc, escape(q.subject), status, escape(q.needed_by), "" if m is None else escape(q.fix))
            missing_count += len(found)
    console.print(table)
    if missing_count:
        err_console.print(f"[bold red]{missing_count} prerequisite(s) missing[/] on {', '.join(datacenters)}: "
                          "install them (README \"Prerequisites\"), then run preflight again", highlight=False)
        return 1
    console.print(f"[green]ok[/] every prerequisite of {', '.join(datacenters)} is present")
    return 0
