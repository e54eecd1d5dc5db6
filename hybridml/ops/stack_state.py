"""Stack state of a rollout's stacks, as the engine's backend keeps it: update locks, pending operations,
the last update's outputs and resource counts. Read here once per rollout; written only by the engine.

Everything `hybridml up|preview --engine|destroy` needs to know about a stack without running the engine:
whether a killed update left a lock or pending operations to clear, and (for `--skip-unchanged`) whether
the last successful update exported the fingerprint of the inputs it would run with now.
"""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybridml.ops.shards import StackSpec
from hybridml.stack.config import project_config_defaults, project_dir


def clear_stale_locks(stack_name: str, on_output: Callable[[str], None]) -> int:
    """A Pulumi process killed outright (SIGKILL, OOM, a lost CI runner) leaves its lock file in a file
    backend and every later update of the stack refuses to start; remove the locks whose process, on
    this host, is gone. Other backends (Pulumi Cloud, S3) are left alone."""
    import socket

    removed = 0
    for stack_dir in lock_dirs(stack_name):
        locks = {}
        for f in stack_dir.glob("*.json"):
            try:
                locks[f.name] = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
        for name in stale_locks(locks, socket.gethostname(), pid_alive):
            (stack_dir / name).unlink(missing_ok=True)
            on_output(f"stack {stack_name}: removed the lock of process {locks[name]['pid']}, which is gone\n")
            removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_pending(stack, on_output: Callable[[str], None]) -> int:
    """An update killed mid-way leaves pending operations; clear them (server-side apply adopts the
    objects on the next up) as scripts/pulumi_env.sh's recover_pending does for the local stack."""
    try:
        deployment = stack.export_stack().deployment or {}
    except Exception:  # noqa: BLE001 - a brand-new stack has nothing to export
        return 0
    if not deployment.get("pending_operations"):
        return 0
    on_output(f"stack {stack.name}: clearing pending operations of an interrupted update\n")
    stack.refresh(clear_pending_creates=True, on_output=on_output)
    return 1


def resource_count(name: str, workspace) -> int:
    try:
        return next((r.resource_count or 0 for r in workspace.list_stacks() if r.name == name), 0)
    except Exception:  # noqa: BLE001 - a count is informative only
        return 0


def stale_locks(locks: dict[str, dict[str, Any]], hostname: str, alive: Any) -> list[str]:
    """The lock files (name -> content of a file backend's lock JSON: pid, hostname, ...) left by a
    Pulumi process of this host that no longer runs (an update killed outright); a lock of another
    host, or of a live process, is never stale."""
    return sorted(name for name, lock in locks.items()
                  if lock.get("hostname") == hostname and isinstance(lock.get("pid"), int) and not alive(lock["pid"]))


class StateReader:
    """What `--skip-unchanged` reads of each stack, once per rollout and cached (the CLI reads a whole
    checkpoint per call: 2.4 s for a 2,200-resource stack): its last update and its state with secrets
    shown (outputs, resources, pending operations)."""

    def __init__(self, workspace) -> None:
        self.workspace = workspace
        self._states: dict[str, dict | None] = {}
        self._lock = threading.Lock()

    def state(self, name: str) -> dict | None:
        with self._lock:
            if name in self._states:
                return self._states[name]
        import subprocess

        proc = subprocess.run(["pulumi", "stack", "export", "--show-secrets", "--stack", name, "--non-interactive"],
                              cwd=project_dir(), capture_output=True, text=True, env={**os.environ})
        state = (json.loads(proc.stdout).get("deployment") or {}) if proc.returncode == 0 else None
        with self._lock:
            self._states[name] = state
        return state

    def outputs(self, name: str) -> dict:
        root: dict[str, Any] = next((r for r in (self.state(name) or {}).get("resources") or []
                     if r.get("type") == "pulumi:pulumi:Stack"), {})
        return {k: plaintext(v) for k, v in (root.get("outputs") or {}).items()}

    def resource_count(self, name: str) -> int:
        return len((self.state(name) or {}).get("resources") or [])

    def unchanged(self, spec: StackSpec) -> tuple[bool, str]:
        """(True, why) when the stack's last update succeeded, left nothing pending, and exported the
        fingerprint of the inputs its program would run with now: the config this rollout gives it (the
        stack's own for the whole-environment stack), the source, spec, plan and SDKs, and for the fleet
        stack the outputs of the site stacks it references."""
        from pulumi import automation as auto

        from hybridml.stack import fingerprint

        try:
            stack = auto.Stack.select(spec.name, self.workspace)
        except auto.StackNotFoundError:
            return False, "engine preview: no such stack yet"
        if locked(spec.name):
            return False, "engine preview: the stack is locked (an update running, or killed)"
        last = stack.info()
        if last is None or last.kind != "update" or last.result != "succeeded":
            return False, ("engine preview: the last update did not succeed" if last else
                           "engine preview: never updated")
        state = self.state(spec.name)
        if state is None or state.get("pending_operations"):
            return False, "engine preview: the state has pending operations"
        recorded = self.outputs(spec.name).get(fingerprint.EXPORT)
        if recorded is None:
            return False, "engine preview: no inputs fingerprint exported by the last update"
        given = {k: v.value for k, v in spec.config.items()} if spec.config else \
            {k: v.value for k, v in stack.get_all_config().items()}
        config = {**project_config_defaults(), **given}
        references = {name: self.outputs(name).get("fleet_members") for name in spec.after} \
            if spec.role == "fleet" else None
        if recorded != fingerprint.inputs_fingerprint(config, project_dir(), references):
            return False, "engine preview: inputs changed since the last update"
        return True, f"inputs unchanged since the update of {last.end_time or last.start_time}: engine not run"


def plaintext(value: Any) -> Any:
    """A state value as the program saw it: `stack export --show-secrets` writes a secret as
    {<secret signature>: ..., "plaintext": <JSON text>}."""
    if isinstance(value, dict):
        if "plaintext" in value and len(value) == 2:
            return plaintext(json.loads(value["plaintext"]))
        return {k: plaintext(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plaintext(v) for v in value]
    return value


def lock_dirs(stack_name: str) -> list[Path]:
    """Where a file:// backend keeps the stack's update locks (none for other backends: they refuse a
    second update themselves)."""
    backend = os.environ.get("PULUMI_BACKEND_URL", "")
    if not backend.startswith("file://"):
        return []
    return list((Path(backend[len("file://"):]).expanduser() / ".pulumi" / "locks").glob(f"*/*/{stack_name}"))


def locked(stack_name: str) -> bool:
    return any(any(d.glob("*.json")) for d in lock_dirs(stack_name))
