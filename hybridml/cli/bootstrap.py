"""`hybridml bootstrap SPEC --datacenter X [--check] [--limit ...]`: Ansible over the racks of a datacenter.

Registered in hybridml/cli/app.py. Prints live progress (one row per
host), a per-host results table and a summary. Exit codes: 0 every host finished, 1 a host failed
(the message names host and task) or was stopped by max_fail_percentage, 2 bad input (spec,
overrides file, --limit, --datacenter) or Ansible missing.
"""
from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hybridml.cli.output import console, err_console, fail
from infra.errors import HybridmlError

NOTHING_BOOTSTRAPPED = "nothing was bootstrapped."

STATUS_STYLE = {"pending": "dim", "running": "cyan", "ok": "green", "changed": "yellow", "failed": "bold red",
                "aborted": "red", "not_run": "dim red"}


class _Progress:
    """Live per-host rows on a terminal; one line per batch / finished host elsewhere (CI logs)."""

    def __init__(self, console: Console, result_hosts: dict, check: bool):
        self.console = console
        self.hosts = result_hosts
        self.check = check
        self.task = ""
        self.t0 = time.monotonic()
        self.live: Live | None = None

    def render(self) -> Group:
        table = Table(show_edge=False, pad_edge=False, box=None, expand=False)
        for col in ("host", "rack", "status", "ok", "changed", "task"):
            table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=70 if col == "task" else None)
        for h in self.hosts.values():
            style = STATUS_STYLE.get(h.status, "")
            task = h.failed_task if h.status == "failed" else (h.current_task or "") if h.status == "running" else ""
            table.add_row(h.name, h.rack, Text(h.status, style=style), str(h.ok), str(h.changed), task)
        head = Text(f"{'check mode, ' if self.check else ''}{time.monotonic() - self.t0:5.0f}s  {self.task}", style="dim")
        return Group(head, table)

    def __call__(self, event) -> None:
        if event.kind == "task_start":
            self.task = event.task or ""
        if self.live is not None:
            self.live.update(self.render())
            return
        if event.kind == "batch_start":
            self.console.print(f"[bold]batch {event.batch + 1}[/]: {event.message}", highlight=False)
        elif event.kind == "host_done":
            h = self.hosts[event.host]
            extra = f" at {h.failed_task!r}: {h.message}" if h.status == "failed" else \
                f" ({h.changed} changed)" if h.changed else ""
            self.console.print(f"  {h.name:<16} [{STATUS_STYLE.get(h.status, '')}]{h.status}[/]{extra}",
                               highlight=False)


def _results_table(result) -> Table:
    table = Table(title=f"bootstrap of {result.datacenter}" + (" (check mode)" if result.check else ""),
                  title_justify="left")
    for col in ("host", "rack", "address", "status", "ok", "changed", "failed", "time", "failed task / note"):
        table.add_column(col, overflow="fold")
    for h in result.hosts.values():
        note = ""
        if h.status == "failed":
            note = f"{h.failed_task}: {h.message}"
        elif h.status in ("aborted", "not_run"):
            note = h.message or ""
        elif h.changed_tasks:
            first = ", ".join(t.split("| ", 1)[-1] for t in h.changed_tasks[:2])
            note = f"{len(h.changed_tasks)} task(s) changed: {first}" + (", ..." if len(h.changed_tasks) > 2 else "")
        duration = f"{h.duration_s:.0f}s" if h.duration_s is not None else "-"
        table.add_row(h.name, h.rack, h.address, Text(h.status, style=STATUS_STYLE.get(h.status, "")), str(h.ok),
                      str(h.changed), str(h.failed + h.unreachable), duration, note)
    return table


def bootstrap(
    spec: str = typer.Argument(..., help="Environment spec: a YAML path, or a shipped environment name (local, dev, prod)."),
    datacenter: str | None = typer.Option(None, "--datacenter", "-d",
                                             help="Datacenter of the spec to bootstrap (default: its only one)."),
    check: bool = typer.Option(False, "--check", help="Dry run: report what would change (Ansible --check --diff)."),
    diff: bool = typer.Option(False, "--diff", help="Show file differences of changed tasks (implied by --check)."),
    limit: list[str] | None = typer.Option(None, "--limit", "-l",
                                              help="Hosts, racks, groups or globs (comma separated or repeated; "
                                                   "!x excludes). Default: every host."),
    overrides: Path | None = typer.Option(None, "--overrides",
                                             help="Inventory overrides YAML: connection settings, package sources, "
                                                  "extra hosts (scripts/testhosts.py up writes one)."),
    forks: int | None = typer.Option(None, "--forks", min=1, help="Hosts worked on at once (default: a rack)."),
    serial: str = typer.Option("rack", "--serial", help="Rolling batches: 'rack' (one per rack) or a batch size."),
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig",
                                              help="After a simulated bootstrap, register the hosts as kwok nodes "
                                                   "in this cluster (the local on-prem cluster)."),
    write_inventory: Path | None = typer.Option(None, "--write-inventory",
                                                   help="Write the rendered Ansible inventory to this file and exit."),
) -> None:
    """Bootstrap the racks of a datacenter with Ansible: OS baseline, containerd, kubelet/kubeadm, node exporter."""
    from datacenter.driver import run_bootstrap
    from datacenter.inventory import build_inventory, parse_overrides
    from infra.loader import load_environment, read_input

    out, err = console, err_console
    try:
        env = load_environment(spec)
        if datacenter is None:
            names = [d.name for d in env.datacenters]
            if len(names) != 1:
                err.print(f"[bold red]error:[/] {spec} has {len(names)} datacenters ({', '.join(names) or 'none'}): "
                          "pick one with --datacenter", highlight=False)
                raise typer.Exit(2)
            datacenter = names[0]
        # read_input: a file too large or not UTF-8 is a SpecError (exit 2), not a traceback
        loaded = parse_overrides(read_input(overrides, "the overrides file"), str(overrides)) if overrides is not None else None
        inventory = build_inventory(env, datacenter, loaded)
        if serial != "rack" and not serial.isdigit():
            err.print(f"[bold red]error:[/] --serial {serial!r}: use 'rack' or a batch size", highlight=False)
            raise typer.Exit(2)
        if write_inventory is not None:
            write_inventory.write_text(inventory.to_yaml())
            out.print(f"wrote {write_inventory} ({len(inventory.hosts)} hosts, {len(inventory.racks)} racks)")
            return
        selected = inventory.select(limit)
    except HybridmlError as exc:
        fail(exc, noun="input", hint=NOTHING_BOOTSTRAPPED)

    from datacenter.kwok import simulated_hosts

    # hosts with a real kubelet (kubernetes_node_simulated: false on the host) join for real: never kwok nodes
    simulated = bool(simulated_hosts(inventory))
    batches = inventory.batches(selected)
    out.print(f"bootstrapping [bold]{len(selected)}[/] host(s) of {inventory.datacenter} in {len(batches)} rack batch(es) "
              f"(max_fail_percentage {inventory.max_fail_percentage})" + (" [yellow]--check[/]" if check else ""),
              highlight=False)

    from datacenter.driver import HostResult

    rows = {}
    for bi, batch in enumerate(batches):
        for name in batch:
            inv_host = inventory.host(name)
            rows[name] = HostResult(name=name, rack=inv_host.rack, address=inv_host.address, batch=bi)
    progress = _Progress(out, rows, check)

    def on_event(event) -> None:
        # mirror the driver's host state for the live view
        if event.host in rows:
            row = rows[event.host]
            if event.kind == "host_task":
                row.current_task = event.task
                if event.status == "running" and row.status == "pending":
                    row.status = "running"
                elif event.status == "ok":
                    row.ok += 1
                elif event.status == "changed":
                    row.changed += 1
            elif event.kind == "host_done":
                row.status = event.status or row.status
                if event.status == "failed":
                    row.failed_task, row.message = event.task, event.message
        progress(event)

    try:
        if out.is_terminal:
            with Live(progress.render(), console=out, refresh_per_second=4, transient=True) as live:
                progress.live = live
                result = run_bootstrap(inventory, check=check, diff=diff or check, limit=selected, forks=forks,
                                       serial=serial, on_event=on_event)
        else:
            result = run_bootstrap(inventory, check=check, diff=diff or check, limit=selected, forks=forks,
                                   serial=serial, on_event=on_event)
    except HybridmlError as exc:
        fail(exc, noun="input", hint=NOTHING_BOOTSTRAPPED)

    out.print(_results_table(result))
    counts = {s: result.count(s) for s in ("ok", "changed", "failed", "aborted", "not_run")}
    summary = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n or s in ("ok", "changed", "failed"))
    out.print(f"[bold]{inventory.datacenter}[/]: {len(result.hosts)} host(s): {summary} in {result.duration_s:.0f}s"
              + (" (check mode: nothing was changed)" if check else ""), highlight=False)

    if simulated and not check:
        out.print("[yellow]simulated targets[/]: kubelet and kubeadm were installed and configured, `kubeadm join` "
                  "was skipped on the hosts with kubernetes_node_simulated (the others joined with a real kubelet).",
                  highlight=False)
        finished = simulated_hosts(inventory, [h.name for h in result.hosts.values() if h.status in ("ok", "changed")])
        if kubeconfig is not None and finished:
            from datacenter.kwok import register_kwok_nodes

            try:
                nodes = register_kwok_nodes(kubeconfig, inventory, finished)
            except HybridmlError as exc:
                fail(exc, noun="input", hint=NOTHING_BOOTSTRAPPED)
            out.print(f"registered {len(nodes)} host(s) as kwok nodes in {kubeconfig} with the inventory's labels "
                      f"and taints: {', '.join(nodes)}", highlight=False)
        elif finished:
            out.print("  pass --kubeconfig (the local on-prem cluster) to register them as kwok nodes.", highlight=False)

    if not result.ok:
        for h in result.failed_hosts:
            err.print(f"[bold red]failed:[/] {h.name} (rack {h.rack}) at task {h.failed_task!r}: {h.message}",
                      highlight=False)
        stopped = [h.name for h in result.hosts.values() if h.status in ("aborted", "not_run")]
        if stopped:
            err.print(f"[red]stopped by max_fail_percentage ({inventory.max_fail_percentage}%):[/] {', '.join(stopped)}",
                      highlight=False)
        if result.artifacts_dir:
            err.print(f"  Ansible events and output: {result.artifacts_dir}", highlight=False)
        raise typer.Exit(1)
