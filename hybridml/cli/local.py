"""`hybridml local up|down|status [SPEC]`: the local control planes of the `local` stack (or of another
environment, e.g. `sim`: the prod catalog on a kwok fleet at reference scale).

Registered in hybridml/cli/app.py as the `local` group.

One local Kubernetes control plane per site of the spec (etcd, kube-apiserver, controller-manager,
scheduler, kwok) on 127.0.0.1, built by scripts/toolchain.sh. GPUs and racks are SIMULATED: the nodes
are kwok fake nodes carrying the labels, taints and capacities of the real instances and hosts; no
container ever runs. `pulumi up --stack local` then deploys onto them (scripts/local_up.sh does both).
SPEC is a shipped environment name (local, sim, ...) or a path. Each environment has its own state dir
(`state_dir_for(env)`: `.local` for `local`, `.local/envs/<env>` otherwise; kubeconfig `<state dir>/kubeconfig`).
Exit codes: 0 ok, 1 a control plane failed to start, 2 bad input (spec) or toolchain missing.
"""
from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from hybridml.cli.output import EXIT_BAD_INPUT, EXIT_FAILED, abort, console, fail, fail_any
from infra import labels as L
from infra.errors import HybridmlError
from infra.kube import quantity_value

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Local Kubernetes control planes with kwok-simulated GPU nodes and racks (the `local` stack).")

SPEC_HELP = ("Environment: a shipped name (local, sim, ...) or a spec file (default: local). "
             "`sim` is the prod catalog on a kwok fleet at reference scale (~1,600 nodes, 1,000+ GPUs).")
STATE_DIR_HELP = "Where clusters live (default: the environment's, .local/ for local, .local/envs/<env>/ otherwise)."
SIMULATED_NOTE = ("GPUs and racks are simulated: every node is a kwok fake node with the labels, taints and "
                  "capacity of the real instance or host; no container runs.")


def _state_dir(state_dir: Path | None, env_name: str | None = None):
    from hybridml.local.paths import DEFAULT_STATE_DIR, state_dir_for

    if state_dir is not None:
        return state_dir
    return state_dir_for(env_name) if env_name else DEFAULT_STATE_DIR


def _cluster_table(clusters, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("cluster (kube context)", "nodes", "GPUs", "CPU cores", "node groups"):
        table.add_column(col, justify="right" if col in ("nodes", "GPUs", "CPU cores") else "left")
    for c in clusters:
        gpus = sum(int(n.capacity.get(L.GPU_RESOURCE, 0)) for n in c.nodes)
        cores = sum(quantity_value(n.capacity.get("cpu", "0")) for n in c.nodes)
        groups: dict[str, int] = {}
        for n in c.nodes:
            key = n.labels.get(L.KARPENTER_NODEPOOL) or f"rack {n.labels.get(L.RACK, '?')}"
            key += f" ({n.labels.get(L.INSTANCE_TYPE) or n.labels.get(L.PRIVACY_ZONE, '')})"
            groups[key] = groups.get(key, 0) + 1
        table.add_row(c.name, str(len(c.nodes)), str(gpus), f"{cores:g}",
                      ", ".join(f"{k} x{v}" for k, v in groups.items()))
    return table


@app.command()
def up(spec: str = typer.Argument("local", help=SPEC_HELP),
       state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
       crd_dir: Path | None = typer.Option(None, "--crd-dir",
                                              help="CRD manifests to install (default $HYBRIDML_CRD_DIR or ../shared/crds)."),
       no_crds: bool = typer.Option(False, "--no-crds", help="Install no CRDs (the serving stack needs them)."),
       sites: str | None = typer.Option(None, "--sites", help="Comma-separated sites; default every site.")) -> None:
    """Start (or reconcile) one local control plane per site of SPEC; idempotent."""
    from hybridml.local.paths import DEFAULT_CRD_DIR
    from hybridml.local.sites import plan_clusters, up_local
    from infra.errors import ToolchainMissing

    out = console
    site_list = [s.strip() for s in sites.split(",")] if sites else None
    try:
        env, clusters = plan_clusters(spec, site_list)
    except (HybridmlError, ValueError) as exc:
        fail_any(exc, EXIT_BAD_INPUT)
    out.print(f"[bold yellow]note:[/] {SIMULATED_NOTE}", highlight=False)
    out.print(_cluster_table(clusters, f"local control planes for {env.name}"))
    crds = None if no_crds else (crd_dir or DEFAULT_CRD_DIR)
    if crds is not None and not Path(crds).is_dir():
        abort(f"CRD directory {crds} not found (--crd-dir, $HYBRIDML_CRD_DIR)", EXIT_BAD_INPUT)
    t0 = time.monotonic()
    try:
        with out.status("starting control planes (a cold start installs the CRDs: about a minute)...") as status:
            def log(msg: str) -> None:
                out.print(f"  {msg}  [dim]({time.monotonic() - t0:.1f}s)[/]", highlight=False)
                status.update(msg)
            res = up_local(spec, _state_dir(state_dir, env.name), crds, sites=site_list, log=log)
    except ToolchainMissing as exc:
        fail_any(exc, EXIT_BAD_INPUT)
    except (RuntimeError, TimeoutError, OSError) as exc:
        fail_any(exc, EXIT_FAILED)
    _print_status(out, res.status)
    out.print(f"[green]ok[/] {len(res.clusters)} local clusters up in {res.timings['total']:.1f}s; "
              f"kubeconfig {res.kubeconfig} (contexts {', '.join(c.name for c in res.clusters)})", highlight=False)
    if env.name == "local":
        out.print("next: pulumi up --stack local (or scripts/local_up.sh, which does both)", highlight=False)
    else:
        out.print(f"next: deploy with kubeconfig {res.kubeconfig} (hybridml:localKubeconfig); "
                  f"stop with `hybridml local down {spec}`", highlight=False)


@app.command()
def down(spec: str | None = typer.Argument(None, help="Only the clusters of this environment (default: all of .local/)."),
         state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_DIR_HELP)
         ) -> None:
    """Stop what `up` started (only the processes it recorded). Data is kept: `up` resumes it."""
    from hybridml.local.sites import down_local, state_dir_of

    out = console
    try:
        sd = state_dir_of(spec, state_dir)
        stopped = down_local(sd, spec)
    except HybridmlError as exc:
        fail(exc, hint=None)
    if not stopped:
        out.print(f"no local clusters in {sd}")
    for name, comps in stopped.items():
        out.print(f"{name}: stopped {', '.join(comps) or 'nothing (was not running)'}", highlight=False)


@app.command()
def status(spec: str | None = typer.Argument(None, help="Only the clusters of this environment (default: all of .local/)."),
           state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_DIR_HELP)
           ) -> None:
    """Which components of which local clusters are running. Exit 1 if any is down."""
    from hybridml.local.controlplane import status as cp_status
    from hybridml.local.fromspec import cluster_name

    out = console
    env = None
    if spec is not None:
        from infra.loader import load_environment

        try:
            env = load_environment(spec)
        except HybridmlError as exc:
            fail(exc, hint=None)
    sd = _state_dir(state_dir, env.name if env is not None else None)
    st = cp_status(sd)
    if env is not None:
        st = {n: s for n, s in st.items() if n in {cluster_name(x.name) for x in env.sites}}
    if not st:
        out.print(f"no local clusters in {sd} (start them: hybridml local up {spec or ''})".rstrip(), highlight=False)
        raise typer.Exit(1)
    out.print(f"[yellow]note:[/] {SIMULATED_NOTE}", highlight=False)
    _print_status(out, st)
    if not all(s.running for s in st.values()):
        raise typer.Exit(1)


def _print_status(out: Console, st) -> None:
    from hybridml.local.components import CRD_COMPONENTS

    table = Table(title="local control planes", title_justify="left")
    for col in ("cluster", "API server", "etcd", "apiserver", "controller-manager", "scheduler", "kwok", "operators"):
        table.add_column(col)
    for name, s in st.items():
        cells = ["[green]up[/]" if s.components.get(c) else "[red]down[/]"
                 for c in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")]
        # the operators a cluster runs where their CRDs are installed (KubeRay, the KServe controller manager)
        operators = [f"{c} [green]up[/]" if s.components[c] else f"{c} [red]down[/]" for c in CRD_COMPONENTS if c in s.components]
        table.add_row(name, s.server or "-", *cells, ", ".join(operators) or "-")
    out.print(table)


if __name__ == "__main__":  # python -m hybridml.cli.local up|down|status (before the CLI registers it)
    app()
