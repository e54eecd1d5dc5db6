"""Sharded rollout through the Pulumi Automation API (issue 8): `hybridml up|preview --engine|destroy ENV`.

Solves the environment's placement once and writes it to ``.local/plans/<env>.json``; derives the
site stacks and the fleet stack (hybridml/ops/shards.py) with their config from the environment's stack
(``Pulumi.<env>.yaml``, secrets decrypted through the engine and re-encrypted per stack); runs them
wave by wave (site stacks in parallel, then the fleet stack; the reverse for destroy), each through
the same Pulumi program and CLI a user runs with ``pulumi up --stack <env>-<site>``. One failing stack
does not stop the others; the stacks that depend on it are skipped and say why.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridml.ops.shards import (
    DEFAULT_RESOURCE_PARALLEL,
    DEFAULT_RETRIES,
    Action,
    StackSpec,
    blocked_by,
    checkpoint_mode,
    largest_first,
    stack_specs,
    transient_error,
    waves,
    whole_stack_spec,
)
from hybridml.ops.shards import select as select_sites
from hybridml.ops.stack_state import StateReader, clear_stale_locks, recover_pending, resource_count
from hybridml.stack.config import MODE, SPEC, ConfigEntry, project_dir, read_stack_config
from hybridml.stack.planfile import plan_path as plan_file_path
from hybridml.stack.planfile import read_plan, write_plan
from infra.errors import HybridmlError

LOG_DIR = Path(".local") / "rollout-logs"
LOCAL_PASSPHRASE = "local-only"   # as scripts/pulumi_env.sh: simulated environments hold no secret


@dataclass
class StackRun:
    """What happened to one stack: live counters (progress) and the result."""

    name: str
    role: str
    state: str = "waiting"             # waiting | running | ok | failed | skipped
    steps: int = 0                     # resource steps finished (or planned, for preview)
    changes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""
    resources: int = 0                 # resources in the stack after the run
    last: str = ""                     # the last resource touched (progress line)
    retries: int = 0                   # runs again after a transient API-server error
    note: str = ""                     # how the result was reached, when not by the engine alone

    @property
    def ok(self) -> bool:
        return self.state == "ok"


@dataclass
class RolloutResult:
    environment: str
    action: Action
    plan_path: str | None
    stacks: list[StackRun]
    seconds: float
    checkpoints: str = "every-step"

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stacks)

    def to_json(self) -> dict[str, Any]:
        return {"environment": self.environment, "action": self.action, "plan": self.plan_path, "ok": self.ok,
                "seconds": round(self.seconds, 2), "checkpoints": self.checkpoints,
                "stacks": [{"name": s.name, "role": s.role, "state": s.state, "seconds": round(s.seconds, 2),
                            "changes": s.changes, "resources": s.resources, "retries": s.retries,
                            "error": s.error, "note": s.note} for s in self.stacks]}


class RolloutError(HybridmlError):
    """The rollout cannot start (bad environment config, no toolchain); exit 2."""

    exit_code = 2


# --------------------------------------------------------------------------- environment of the CLI


def pulumi_environment(mode: str, checkpoints: str = "auto") -> dict[str, str]:
    """Env vars for the Pulumi CLI, as scripts/pulumi_env.sh sets them for the local stack; a passphrase
    default only for simulated (local-mode) environments; the checkpoint policy (shards.checkpoint_mode)."""
    env = {"PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
           "PULUMI_SKIP_CHECKPOINTS": "true" if checkpoint_mode(checkpoints) == "final" else "false"}
    if not os.environ.get("PULUMI_BACKEND_URL"):
        state = project_dir() / ".state"
        state.mkdir(exist_ok=True)
        env["PULUMI_BACKEND_URL"] = f"file://{state}"
    if mode == "local" and not os.environ.get("PULUMI_CONFIG_PASSPHRASE") \
            and not os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        env["PULUMI_CONFIG_PASSPHRASE"] = LOCAL_PASSPHRASE
    env.update(toolchain_environment())
    return env


def toolchain_environment() -> dict[str, str]:
    """PATH and PULUMI_HOME of the Go-built toolchain (scripts/toolchain.sh --env: the CLI, the language
    host and the Kubernetes provider plugin), when it is built; else the user's own `pulumi` on PATH."""
    import shutil

    from hybridml.local.toolchain import script_environment

    env, _ = script_environment()
    if env is None:
        if shutil.which("pulumi") is None:
            raise RolloutError("no Pulumi CLI: build the toolchain with scripts/toolchain.sh (or put `pulumi` on PATH)")
        return {}
    if os.environ.get("PULUMI_HOME"):   # the user's own PULUMI_HOME wins
        env.pop("PULUMI_HOME", None)
    return env


def decrypt_secrets(environment: str, entries: dict[str, ConfigEntry], workspace) -> dict[str, ConfigEntry]:
    """Secret values of the environment's config, decrypted through the engine (only when there are any)."""
    if not any(e.secret for e in entries.values()):
        return entries
    from pulumi import automation as auto

    decrypted = auto.Stack.create_or_select(environment, workspace).get_all_config()
    return {k: ConfigEntry(decrypted[k].value, True) if e.secret else e for k, e in entries.items()}


# --------------------------------------------------------------------------- running one stack


def _short_error(exc: Exception, diagnostics: list[str]) -> str:
    if diagnostics:
        return " | ".join(d.strip().splitlines()[0][:300] for d in diagnostics[-3:])
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "error" in ln.lower()]
    return (lines[-1] if lines else text.strip().splitlines()[-1] if text.strip() else repr(exc))[:500]


def run_stack(spec: StackSpec, action: Action, workspace, run: StackRun, *, expect_no_changes: bool = False,
              parallel: int | None = None, remove: bool = False, log_dir: Path | None = None,
              retries: int = DEFAULT_RETRIES, skip_unchanged: StateReader | None = None) -> None:
    """Run one stack's update; a transient API-server error (shards.transient_error) runs it again,
    up to `retries` times (the engine log keeps every attempt). `skip_unchanged` (preview, a StateReader):
    a stack whose inputs fingerprint equals the one its last successful update exported is reported
    `same` without running the engine (hybridml/stack/fingerprint.py)."""
    from pulumi import automation as auto

    run.state = "running"
    t0 = time.monotonic()
    diagnostics: list[str] = []
    log = open(log_dir / f"{spec.name}.log", "w") if log_dir else None

    def on_event(ev) -> None:
        if ev.res_outputs_event is not None and action != "preview":
            run.steps += 1
            run.last = ev.res_outputs_event.metadata.urn.rsplit("::", 1)[-1]
        elif ev.resource_pre_event is not None and action == "preview":
            run.steps += 1
            run.last = ev.resource_pre_event.metadata.urn.rsplit("::", 1)[-1]
        elif ev.diagnostic_event is not None and ev.diagnostic_event.severity == "error":
            diagnostics.append(ev.diagnostic_event.message)
        elif ev.summary_event is not None:
            run.changes = {str(k): int(v) for k, v in (ev.summary_event.resource_changes or {}).items()}

    def on_output(line: str) -> None:
        if log:
            log.write(line if line.endswith("\n") else line + "\n")

    def once() -> None:
        if action == "preview" and skip_unchanged is not None:
            same, why = skip_unchanged.unchanged(spec)
            on_output(f"stack {spec.name}: {why}\n")
            if same:
                run.note, run.changes = why, {"same": skip_unchanged.resource_count(spec.name)}
                run.resources = run.changes["same"]
                return
        if action == "destroy":
            try:
                stack = auto.Stack.select(spec.name, workspace)
            except auto.StackNotFoundError:
                run.error = "no such stack (nothing to destroy)"
                return
            clear_stale_locks(spec.name, on_output)
            stack.destroy(on_event=on_event, on_output=on_output, parallel=parallel)
            if remove:
                workspace.remove_stack(spec.name)
        else:
            stack = auto.Stack.create_or_select(spec.name, workspace)
            if spec.config:
                stale = [k for k in stack.get_all_config() if k not in spec.config]
                if stale:
                    stack.remove_all_config(stale)
                stack.set_all_config({k: auto.ConfigValue(v.value, secret=v.secret) for k, v in spec.config.items()})
            interrupted = clear_stale_locks(spec.name, on_output) + recover_pending(stack, on_output)
            if action == "up":
                if interrupted:
                    stack = _adopting(stack, workspace, on_output)
                stack.up(on_event=on_event, on_output=on_output, parallel=parallel)
            else:
                stack.preview(on_event=on_event, on_output=on_output, parallel=parallel,
                              expect_no_changes=expect_no_changes)

    try:
        while True:
            diagnostics.clear()
            try:
                once()
            except Exception as exc:  # noqa: BLE001 - one stack's failure is reported, the others go on
                error = _short_error(exc, diagnostics)
                if run.retries < retries and transient_error(" ".join([error, str(exc), *diagnostics])):
                    run.retries += 1
                    on_output(f"stack {spec.name}: transient error, running it again ({run.retries}/{retries}): "
                              f"{error}\n")
                    continue
                run.state, run.error = "failed", error
                return
            break
        if (action != "destroy" or not remove) and not run.note:
            run.resources = resource_count(spec.name, workspace)
        run.state = "ok"
    finally:
        run.seconds = time.monotonic() - t0
        if log:
            log.close()


def _adopting(stack, workspace, on_output: Callable[[str], None]):
    """The stack, in a workspace whose Kubernetes provider forces server-side apply conflicts.

    After an update was killed outright, the clusters hold objects the state does not know; the next
    up re-creates them with a new field manager. Where the API server filled in defaults inside an
    atomic list (Gateway listeners' certificateRefs, AIGatewayRoute rules), the dead manager's list
    no longer equals ours and the apply conflicts (measured: 3 of 50 objects in the local stack's
    kill-and-resume test). Those objects are this program's own, so the recovery run takes them over
    (PULUMI_K8S_ENABLE_PATCH_FORCE, read by the provider); later runs apply without force."""
    from pulumi import automation as auto

    on_output(f"stack {stack.name}: recovering an interrupted update: taking over the objects it left "
              f"(server-side apply with force)\n")
    forcing = auto.LocalWorkspace(work_dir=workspace.work_dir, pulumi_home=workspace.pulumi_home,
                                  env_vars={**(workspace.env_vars or {}), "PULUMI_K8S_ENABLE_PATCH_FORCE": "true"},
                                  pulumi_command=workspace.pulumi_command)
    return auto.Stack.select(stack.name, forcing)


# --------------------------------------------------------------------------- the rollout


def prepare(environment: str, action: Action, sites: list[str] | None, plan_file: str | None,
            with_fleet: bool = True, monolithic: bool = False,
            checkpoints: str = "auto") -> tuple[list[StackSpec], str | None, dict[str, str], Any]:
    """(stacks, plan path, CLI env vars, workspace). Solves and writes the plan for up/preview."""
    from pulumi import automation as auto

    from infra.loader import load_environment

    root = project_dir()
    written = read_stack_config(environment)
    env_vars = pulumi_environment(written.get(MODE, ConfigEntry("cloud")).value, checkpoints)
    os.environ.update(env_vars)   # the Automation API runs the CLI with this process's environment
    workspace = auto.LocalWorkspace(work_dir=str(root), env_vars=env_vars)
    config = decrypt_secrets(environment, written, workspace)
    spec_path = config[SPEC].value
    if not Path(spec_path).is_absolute() and (root / spec_path).exists():
        spec_path = str(root / spec_path)   # stack config paths are relative to the project
    env = load_environment(spec_path)
    if plan_file is not None:
        plan_path = Path(plan_file).resolve()
        plan = read_plan(plan_path, field="--plan")
    else:
        plan_path = plan_file_path(environment, relative=True)
        if action == "destroy" and (root / plan_path).exists():
            plan = read_plan(root / plan_path)
        else:
            from policies.placement import solve

            plan = solve(env)
            write_plan(root / plan_path, plan)
    used = plan.used_sites()
    selected = select_sites(used, [s.name for s in env.sites], sites)
    if monolithic:
        if sites:
            raise RolloutError("--monolithic deploys the whole environment: it takes no --sites")
        specs = [whole_stack_spec(environment)]
    else:
        specs = stack_specs(environment, used, selected, str(plan_path), config, with_fleet=with_fleet)
        specs = largest_first(specs, plan.site_sizes())
    return specs, str(plan_path), env_vars, workspace


def rollout(environment: str, action: Action, *, sites: list[str] | None = None, parallel: int = 4,
            plan_file: str | None = None, expect_no_changes: bool = False, remove: bool = False,
            with_fleet: bool = True, monolithic: bool = False, resource_parallel: int = DEFAULT_RESOURCE_PARALLEL,
            checkpoints: str = "auto", retries: int = DEFAULT_RETRIES, skip_unchanged: bool = False,
            stacks: Callable[[list[StackSpec]], list[StackSpec]] | None = None,
            on_tick: Callable[[list[StackRun]], None] | None = None, log_dir: Path | None = None) -> RolloutResult:
    t0 = time.monotonic()
    # Destroying some sites leaves the fleet stack alone: it still lists the others (the next up refreshes it).
    with_fleet = with_fleet and not (action == "destroy" and sites)
    specs, plan_path, _, workspace = prepare(environment, action, sites, plan_file, with_fleet, monolithic,
                                             checkpoints)
    if stacks is not None:          # a caller-built layout over the same plan (scripts/bench_rollout.py)
        specs = stacks(specs)
    runs = {s.name: StackRun(s.name, s.role) for s in specs}
    reader = StateReader(workspace) if skip_unchanged and action == "preview" else None
    ordered = [runs[s.name] for wave in waves(specs, action) for s in wave]
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def ticker() -> None:
        while not stop.wait(0.25):
            if on_tick:
                on_tick(ordered)

    tick = threading.Thread(target=ticker, daemon=True)
    tick.start()
    failed: set[str] = set()
    try:
        for wave in waves(specs, action):
            runnable = []
            for spec in wave:
                # destroy: a site stack goes even if the fleet stack failed (its references only read)
                blockers = blocked_by(spec, failed) if action != "destroy" else []
                if blockers:
                    runs[spec.name].state = "skipped"
                    runs[spec.name].error = f"skipped: depends on failed {', '.join(blockers)}"
                else:
                    runnable.append(spec)
            with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
                list(pool.map(lambda sp: run_stack(sp, action, workspace, runs[sp.name],
                                                   expect_no_changes=expect_no_changes, parallel=resource_parallel,
                                                   remove=remove, log_dir=log_dir, retries=retries,
                                                   skip_unchanged=reader), runnable))
            failed |= {s.name for s in wave if runs[s.name].state in ("failed", "skipped")}
    finally:
        stop.set()
        tick.join()
        if on_tick:
            on_tick(ordered)
    return RolloutResult(environment, action, plan_path, ordered, time.monotonic() - t0,
                         checkpoints=checkpoint_mode(checkpoints))
