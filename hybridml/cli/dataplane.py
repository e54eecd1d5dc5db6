"""`hybridml local dataplane up|down|status [SPEC]`: the serving path of an environment on loopback, for real.

Registered in hybridml/cli/app.py under the `local` group. For every site, the gateway objects the program
renders there (taken from the offline preview of the real program, hybridml/ops/preview.py: what `pulumi up`
creates) are translated by the real Envoy Gateway controller (standalone mode) and served by real Envoy
proxies, in front of SIMULATED model servers (one process per pipeline and site). Shows each object's status as
the controller reports it; any rejection fails the command (exit 1) with the controller's reason.
Exit codes: 0 ok, 1 a rejection or a component that did not come up, 2 bad input (spec, --extra) or a missing tool.
"""
from __future__ import annotations

from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hybridml.cli.output import EXIT_BAD_INPUT, EXIT_FAILED, abort, console, fail, fail_any, load
from infra.errors import HybridmlError, SpecError, SpecIssue

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The data path on loopback: real Envoy Gateway + Envoy, simulated model servers.")

SPEC_HELP = "Environment: a shipped name (local, dev, ...) or a spec file (default: local)."
STATE_DIR_HELP = "State dir (default: the environment's, .local/ for local, .local/envs/<env>/ otherwise)."
NOTE = ("Envoy Gateway (the real controller, standalone mode) and Envoy (real) on 127.0.0.1; the model servers are "
        "SIMULATED (KServe v2 for Triton, plain HTTP for CPU services). Envoy AI Gateway objects (LLM routes, token "
        "budgets) are not translated: its controller is not available here. Entry hosts want a tenant's API key "
        "(`Authorization: Bearer KEY`): `hybridml tenant-key --dataplane SPEC TENANT`.")


def _state_dir(state_dir: Path | None, env_name: str) -> Path:
    from hybridml.local.paths import state_dir_for

    return state_dir if state_dir is not None else state_dir_for(env_name)


def _extra(items: list[str]) -> dict[str, list[dict]]:
    """SITE=FILE pairs -> site -> objects; a bad file exits 2 naming file:line and the reason."""
    out: dict[str, list[dict]] = {}
    for item in items:
        site, sep, file = item.partition("=")
        if not sep or not site or not file:
            abort(f"--extra {item}: expected SITE=FILE", EXIT_BAD_INPUT)
        try:
            text = Path(file).read_text()
        except OSError as exc:
            abort(f"--extra {file}: {exc.strerror or exc}", EXIT_BAD_INPUT)
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            fail(SpecError(file, [SpecIssue((), f"not YAML: {getattr(exc, 'problem', None) or exc}", line)]),
                 noun="--extra file", hint=None)
        for i, d in enumerate(docs):
            missing = [k for k in ("apiVersion", "kind") if not isinstance(d, dict) or not d.get(k)]
            if not missing and not (d.get("metadata") or {}).get("name"):
                missing = ["metadata.name"]
            if missing:
                fail(SpecError(file, [SpecIssue((i,), f"document {i + 1} has no {', '.join(missing)}")]),
                     noun="--extra file", hint=None)
        out.setdefault(site, []).extend(docs)
    return out


@app.command()
def up(spec: str = typer.Argument("local", help=SPEC_HELP),
       state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_DIR_HELP),
       extra: list[str] = typer.Option([], "--extra", metavar="SITE=FILE",
                                       help="More Gateway API / Envoy Gateway objects for SITE's gateway namespace "
                                            "(e.g. a route to try before rendering it). Repeatable."),
       timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for the controller and its Envoys.")) -> None:
    """Start (or restart) the data path of SPEC's sites; exit 1 if the controller rejects anything."""
    from hybridml.local import dataplane
    from hybridml.ops.preview import run_preview
    from infra.errors import ToolchainMissing
    from infra.loader import resolve_spec_path

    env = load(spec)
    extra_docs = _extra(extra)
    unknown = sorted(set(extra_docs) - {s.name for s in env.sites})
    if unknown:
        abort(f"--extra names {', '.join(unknown)}, not a site of {env.name} "
              f"(sites: {', '.join(s.name for s in env.sites)})", EXIT_BAD_INPUT)
    out = console
    out.print(f"[bold yellow]note:[/] {NOTE}", highlight=False)
    try:
        with out.status("rendering the program's objects (offline preview)..."):
            result = run_preview(str(resolve_spec_path(spec)), mode="local")
    except HybridmlError as exc:
        fail(exc)
    names = {s.name for s in env.sites}
    manifests = {s: m for s, m in result.kubernetes_manifests(redact=False).items() if s in names}
    try:
        with out.status("starting the data path...") as st:
            def log(message: str) -> None:
                out.print(f"  {message}", highlight=False)
                st.update(message)
            report = dataplane.up(env, manifests, _state_dir(state_dir, env.name), extra=extra_docs, timeout=timeout,
                                  log=log)
    except ToolchainMissing as exc:
        fail_any(exc, EXIT_BAD_INPUT)
    except (HybridmlError, OSError, TimeoutError) as exc:
        fail_any(exc, EXIT_FAILED)
    _print_report(out, report)
    if not report.ok:
        _problems(report)
    out.print(f"[green]ok[/] data path of {env.name} up: every object the controller saw is accepted; "
              f"stop it with `hybridml local dataplane down {spec}`", highlight=False)


@app.command()
def status(spec: str = typer.Argument("local", help=SPEC_HELP),
           state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_DIR_HELP)) -> None:
    """What runs, and each object's status as the controller reports it. Exit 1 if anything is down or rejected."""
    from hybridml.local import dataplane

    env = load(spec)
    report = dataplane.status(_state_dir(state_dir, env.name))
    if report is None:
        abort(f"no data path of {env.name} here (start it: hybridml local dataplane up {spec})", EXIT_FAILED)
    console.print(f"[yellow]note:[/] {NOTE}", highlight=False)
    _print_report(console, report)
    if not report.ok:
        _problems(report)


@app.command()
def down(spec: str = typer.Argument("local", help=SPEC_HELP),
         state_dir: Path | None = typer.Option(None, "--state-dir", help=STATE_DIR_HELP)) -> None:
    """Stop what `up` started (envoy-gateway with its Envoys, the simulated servers)."""
    from hybridml.local import dataplane

    env = load(spec)
    stopped = dataplane.down(_state_dir(state_dir, env.name))
    console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running", highlight=False)


def _problems(report) -> None:  # noqa: ANN001 - hybridml.local.dataplane.Report, imported lazily
    from hybridml.cli.output import err_console

    err_console.print(f"[bold red]error:[/] the data path of {report.env} is not healthy ({len(report.problems)} problem(s)):",
                      highlight=False)
    for p in report.problems:
        err_console.print(f"  - {escape(p)}", highlight=False)
    raise typer.Exit(EXIT_FAILED)


def _print_report(out: Console, report) -> None:  # noqa: ANN001 - see _problems
    st = report.state
    out.print(f"Envoy Gateway {st['envoy_gateway'].get('version', '?')} ({st['envoy_gateway']['binary']}), "
              f"Envoy {st['envoy']['version']} ({st['envoy']['binary']})", highlight=False)
    t = Table(title="entry points (HTTPS on 127.0.0.1; trust " + st["public_ca"] + ")", title_justify="left")
    for col in ("site", "gateway", "listener", "hostname", "address", "rendered port"):
        t.add_column(col)
    for site, info in st["sites"].items():
        for lst in info["listeners"]:
            t.add_row(site, lst["gateway"], lst["listener"], lst["hostname"] or "*", f"127.0.0.1:{lst['port']}",
                      str(lst["rendered_port"]))
    out.print(t)
    t = Table(title="SIMULATED model servers (one process per pipeline and site)", title_justify="left")
    for col in ("site", "pipeline", "engine", "tier", "variant -> port", "pid"):
        t.add_column(col)
    for s in st["servers"]:
        pid = report.processes.get(s["component"])
        t.add_row(s["site"], s["pipeline"], s["engine"], s["tier"],
                  ", ".join(f"{v or '-'} -> {p}" for v, p in sorted(s["ports"].items())),
                  str(pid) if pid else "[red]down[/]")
    out.print(t)
    t = Table(title="objects as the controller reports them", title_justify="left")
    for col in ("site", "kind", "name", "status"):
        t.add_column(col)
    for site, o in sorted(report.objects, key=lambda x: (x[0], x[1].kind, x[1].key)):
        cell = f"[green]{escape(o.summary)}[/]" if o.ok else f"[red]{escape(o.summary)}[/]"
        t.add_row(site, o.kind, o.key.split("/", 1)[1], cell)
    out.print(t)
    t = Table(title="Envoy proxies (one per Gateway, run by envoy-gateway)", title_justify="left")
    for col in ("gateway", "state", "version", "listeners", "xDS rejected"):
        t.add_column(col)
    for e in sorted(report.envoys, key=lambda e: e.cluster):
        t.add_row(e.cluster, e.state, e.version, ", ".join(x.split("::")[-1] for x in e.listeners if "ready" not in x),
                  str(sum(e.rejected.values())))
    out.print(t)
    skipped: dict[str, list[str]] = {}
    for s in st["skipped"]:
        skipped.setdefault(s["reason"], []).append(f"{s['site']}/{s['kind']}/{s['name']}")
    for reason, objs in skipped.items():
        out.print(f"[yellow]not translated[/] ({len(objs)}): {escape(reason)}: {escape(', '.join(objs))}", highlight=False)
    out.print("standalone rewrites: " + "; ".join(st["rewrites"]), highlight=False)
