"""Run the bootstrap playbook for one datacenter with ansible-runner and collect per-host results.

Library code: it prints nothing. Progress goes to an `on_event` callback as `ProgressEvent`s while
the playbook runs; the return value is a `BootstrapResult` with one `HostResult` per selected host.

    inventory = build_inventory(env, "dc-local", load_overrides(path))
    result = run_bootstrap(inventory, check=True, limit=["r2"], on_event=print)
    result.failed_hosts  # -> [HostResult(name="r2-h02", failed_task="Base OS | ...", message=...)]

Host states: ``ok`` (finished, nothing changed), ``changed`` (finished, something changed),
``failed`` (a task failed: `failed_task`, `message`), ``aborted`` (its rack's batch was stopped by
max_fail_percentage before it finished), ``not_run`` (a later rack, skipped after the abort).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datacenter.files import ANSIBLE_CFG, PLAYBOOK, ROLES_DIR, playbook_hash
from datacenter.inventory import Inventory
from infra.errors import HybridmlError

#: The playbook's last task; a host that reached it finished the bootstrap.
FINAL_TASK = "Bootstrap | Record what bootstrapped this host"
#: The task that turns an unreachable host into a failed one (counted by max_fail_percentage).
CONNECT_TASK = "Bootstrap | Wait for the host to answer over SSH"

FINISHED = ("ok", "changed")


@dataclass
class ProgressEvent:
    """One thing that happened during a run, for live progress."""

    kind: str  # run_start | batch_start | task_start | host_task | host_done | run_end
    host: str | None = None
    task: str | None = None
    status: str | None = None  # host_task: ok | changed | failed | skipped | unreachable
    message: str | None = None
    batch: int | None = None


@dataclass
class HostResult:
    name: str
    rack: str
    address: str
    batch: int
    status: str = "pending"  # pending | running | ok | changed | failed | aborted | not_run
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: int = 0
    current_task: str | None = None
    failed_task: str | None = None
    message: str | None = None
    changed_tasks: list[str] = field(default_factory=list)
    diffs: list[dict[str, Any]] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started


@dataclass
class BootstrapResult:
    datacenter: str
    check: bool
    selected: list[str]
    batches: list[list[str]]
    max_fail_percentage: int
    hosts: dict[str, HostResult]
    rc: int = 0
    runner_status: str = ""
    aborted_after_batch: int | None = None
    duration_s: float = 0.0
    artifacts_dir: str | None = None

    @property
    def ok(self) -> bool:
        return all(h.status in FINISHED for h in self.hosts.values())

    @property
    def failed_hosts(self) -> list[HostResult]:
        return [h for h in self.hosts.values() if h.status == "failed"]

    @property
    def changed_hosts(self) -> list[HostResult]:
        return [h for h in self.hosts.values() if h.status == "changed"]

    def count(self, status: str) -> int:
        return sum(1 for h in self.hosts.values() if h.status == status)


class BootstrapError(HybridmlError):
    """The run itself could not happen (no ansible-playbook, runner crashed) - not a host failure."""

    exit_code = 2


def mitogen_strategy_dir() -> str | None:
    """Mitogen for Ansible's strategy plugins, when installed (an optional accelerator, see README)."""
    try:
        import ansible_mitogen  # noqa: F401
    except ImportError:
        return None
    path = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
    return str(path) if path.is_dir() else None


def _ansible_env(strategy: str | None = None) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        path = venv_bin + os.pathsep + path
    extra: dict[str, str] = {}
    strategy = strategy or os.environ.get("HYBRIDML_ANSIBLE_STRATEGY") or "auto"
    if strategy == "auto":
        strategy = "mitogen_linear" if mitogen_strategy_dir() else "linear"
    if strategy.startswith("mitogen"):
        plugins = mitogen_strategy_dir()
        if plugins is None:
            raise BootstrapError(f"strategy {strategy} needs Mitogen for Ansible: pip install 'mitogen>=0.3.20,<0.4'")
        extra = {"ANSIBLE_STRATEGY_PLUGINS": plugins}
    extra["ANSIBLE_STRATEGY"] = strategy
    return {
        **extra,
        "PATH": path,
        "ANSIBLE_CONFIG": str(ANSIBLE_CFG),
        "ANSIBLE_ROLES_PATH": str(ROLES_DIR),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_SYSTEM_WARNINGS": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    }


def _message(res: dict[str, Any]) -> str:
    for key in ("msg", "stderr", "module_stderr", "stdout", "reason", "censored"):
        value = res.get(key)
        if value:
            text = " ".join(str(value).split())
            return text if len(text) < 600 else text[:600] + " ..."
    if res.get("results"):
        for item in res["results"]:
            if isinstance(item, dict) and item.get("failed"):
                return _message(item)
    return "failed (no message)"


def run_bootstrap(inventory: Inventory, *, check: bool = False, diff: bool | None = None,
                  limit: list[str] | str | None = None, forks: int | None = None, serial: str | int = "rack",
                  connect_timeout: int = 15, on_event: Callable[[ProgressEvent], None] | None = None,
                  workdir: str | Path | None = None, keep_artifacts: bool = False,
                  extravars: dict[str, Any] | None = None, timeout: int | None = None,
                  strategy: str | None = None) -> BootstrapResult:
    """Run playbooks/bootstrap.yml against the selected hosts of `inventory`.

    check/diff: Ansible's --check/--diff (diff defaults to check). limit: hosts, racks, groups or
    globs (see Inventory.select). serial: "rack" (one batch per rack, the default) or a fixed batch
    size. forks: parallel hosts (default: the largest batch). strategy: Ansible strategy, "auto"
    (default; env HYBRIDML_ANSIBLE_STRATEGY) is mitogen_linear when Mitogen is installed, else linear:
    both run batches and max_fail_percentage the same way. Raises SpecError for a limit that
    matches nothing and BootstrapError when Ansible could not run at all.
    """
    import ansible_runner

    if shutil.which("ansible-playbook", path=_ansible_env("linear")["PATH"]) is None:
        raise BootstrapError("ansible-playbook not found: pip install 'ansible-core>=2.17,<2.20' ansible-runner")
    selected = inventory.select(limit)
    batches = inventory.batches(selected)
    play_vars = inventory.play_vars(selected)
    if serial != "rack":
        size = int(serial)
        play_vars["hybridml_serial"] = [size]
        flat = [h for b in batches for h in b]
        batches = [flat[i:i + size] for i in range(0, len(flat), size)]
    play_vars["hybridml_connect_timeout"] = connect_timeout
    play_vars["hybridml_playbook_hash"] = playbook_hash()
    play_vars.update(extravars or {})
    diff = check if diff is None else diff
    forks = forks or max((len(b) for b in batches), default=1)

    tracker = RunTracker(inventory, batches, selected, check=check, on_event=on_event)
    result = tracker.result
    emit = tracker.emit

    own_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix=f"hybridml-bootstrap-{inventory.datacenter}-")) if workdir is None else Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    (base / "inventory").mkdir(exist_ok=True)
    (base / "inventory" / "hosts.yml").write_text(inventory.to_yaml())
    (base / "play-vars.yml").write_text(yaml.safe_dump(play_vars, sort_keys=True))
    cmdline = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    env = _ansible_env(strategy)
    saved_path = os.environ.get("PATH")
    os.environ["PATH"] = env["PATH"]  # pexpect looks the binary up in our own PATH
    emit(ProgressEvent("run_start", message=f"{len(selected)} host(s) in {len(batches)} batch(es)"))
    t0 = time.monotonic()
    try:
        runner = ansible_runner.run(
            private_data_dir=str(base),
            playbook=str(PLAYBOOK),
            project_dir=str(PLAYBOOK.parent),
            inventory=str(base / "inventory" / "hosts.yml"),
            extravars=play_vars,
            limit=",".join(selected),
            forks=forks,
            cmdline=" ".join(cmdline) or None,
            envvars=env,
            event_handler=tracker.handle,
            quiet=True,
            suppress_env_files=True,
            timeout=timeout,
            settings={"suppress_ansible_output": True, "pexpect_timeout": 10},
        )
    except Exception as exc:  # ansible-runner raises plain exceptions for setup problems
        raise BootstrapError(f"ansible-runner could not run the playbook: {exc}") from exc
    finally:
        if saved_path is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = saved_path
    result.duration_s = time.monotonic() - t0
    result.rc = runner.rc
    result.runner_status = runner.status
    tracker.finalise(runner.stats or {}, runner.status, runner.rc)
    if own_dir and not keep_artifacts and result.ok:
        shutil.rmtree(base, ignore_errors=True)
    else:
        result.artifacts_dir = str(base)
    emit(ProgressEvent("run_end", status="ok" if result.ok else "failed",
                       message=f"{result.count('ok') + result.count('changed')}/{len(result.hosts)} host(s) finished"))
    return result


class RunTracker:
    """Turns ansible-runner events into `HostResult`s and `ProgressEvent`s (no Ansible needed to test it)."""

    def __init__(self, inventory: Inventory, batches: list[list[str]], selected: list[str], *, check: bool = False,
                 on_event: Callable[[ProgressEvent], None] | None = None):
        self.batches = batches
        self.on_event = on_event
        hosts: dict[str, HostResult] = {}
        for bi, batch in enumerate(batches):
            for name in batch:
                h = inventory.host(name)
                hosts[name] = HostResult(name=name, rack=h.rack, address=h.address, batch=bi)
        self.result = BootstrapResult(datacenter=inventory.datacenter, check=check, selected=selected,
                                      batches=batches, max_fail_percentage=inventory.max_fail_percentage,
                                      hosts=hosts)
        self._batch = -1

    def emit(self, event: ProgressEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def handle(self, event: dict[str, Any]) -> bool:
        """ansible-runner's event_handler: called for every event, in order, while the playbook runs."""
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host")
        task = (data.get("task") or "").strip() or None
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start") and task:
            self.emit(ProgressEvent("task_start", task=task))
            return True
        hr = self.result.hosts.get(host) if host else None
        if hr is None:
            return True
        now = time.monotonic()
        if kind == "runner_on_start":
            if hr.batch != self._batch:
                self._batch = hr.batch
                self.emit(ProgressEvent("batch_start", batch=hr.batch,
                                        message=f"rack {hr.rack}: {', '.join(self.batches[hr.batch])}"))
            if hr.started is None:
                hr.started = now
            if hr.status == "pending":
                hr.status = "running"
            hr.current_task = task
            self.emit(ProgressEvent("host_task", host=host, task=task, status="running", batch=hr.batch))
        elif kind == "runner_on_ok":
            res = data.get("res") or {}
            if res.get("changed"):
                hr.changed += 1
                if task and task not in hr.changed_tasks:
                    hr.changed_tasks.append(task)
                if res.get("diff"):
                    hr.diffs.append({"task": task, "diff": res["diff"] if isinstance(res["diff"], list)
                                     else [res["diff"]]})
                status = "changed"
            else:
                hr.ok += 1
                status = "ok"
            self.emit(ProgressEvent("host_task", host=host, task=task, status=status, batch=hr.batch))
            if task == FINAL_TASK:
                hr.finished = now
                hr.status = "changed" if hr.changed else "ok"
                self.emit(ProgressEvent("host_done", host=host, status=hr.status, batch=hr.batch))
        elif kind == "runner_on_skipped":
            hr.skipped += 1
            self.emit(ProgressEvent("host_task", host=host, task=task, status="skipped", batch=hr.batch))
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                hr.ok += 1
                return True
            res = data.get("res") or {}
            if kind == "runner_on_failed":
                hr.failed += 1
                prefix = "host unreachable over SSH: " if task == CONNECT_TASK else ""
            else:
                hr.unreachable += 1
                prefix = "unreachable: "
            hr.status = "failed"
            hr.failed_task = task
            hr.message = prefix + _message(res)
            hr.finished = now
            self.emit(ProgressEvent("host_task", host=host, task=task, status="failed", message=hr.message,
                                    batch=hr.batch))
            self.emit(ProgressEvent("host_done", host=host, status="failed", task=task, message=hr.message,
                                    batch=hr.batch))
        return True

    def finalise(self, stats: dict[str, Any], status: str, rc: int) -> BootstrapResult:
        """Final states: hosts that never finished were stopped by max_fail_percentage (or the run ended)."""
        result = self.result
        result.rc, result.runner_status = rc, status
        failed_batches = {h.batch for h in result.hosts.values() if h.status == "failed"}
        for hr in result.hosts.values():
            if hr.status in ("failed",) + FINISHED:
                continue
            limit = f"more than {result.max_fail_percentage}% of its batch failed (max_fail_percentage)"
            if hr.started is None:
                hr.status = "not_run"
                earlier = sorted(b for b in failed_batches if b < hr.batch)
                hr.message = (f"not run: batch {earlier[-1] + 1} ({self._rack_of(earlier[-1])}) stopped the rollout: "
                              + limit) if earlier else f"not run (run status {status}, rc {rc})"
            else:
                hr.status = "aborted"
                hr.message = (f"stopped after '{hr.current_task}': " + limit) if hr.batch in failed_batches else \
                    f"stopped after '{hr.current_task}' (run status {status}, rc {rc})"
        not_run = [h for h in result.hosts.values() if h.status == "not_run"]
        if not_run and failed_batches:
            earlier = [b for b in failed_batches if b < min(h.batch for h in not_run)]
            result.aborted_after_batch = max(earlier) if earlier else None
        return result

    def _rack_of(self, batch: int) -> str:
        return "rack " + self.result.hosts[self.batches[batch][0]].rack


def max_fail_exceeded(failed: int, batch_size: int, max_fail_percentage: int) -> bool:
    """Ansible's rule: a batch aborts the play once failed/size is strictly above the percentage."""
    return batch_size > 0 and failed / batch_size > max_fail_percentage / 100.0


def result_to_data(result: BootstrapResult) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(result)


def main(argv: list[str] | None = None) -> int:
    """`python -m datacenter.driver INVENTORY_JSON RESULT_JSON [--limit X] [--check]`: one run, in its own process.

    For callers that must not fork Ansible from their own process (the Pulumi dynamic provider runs
    inside a gRPC server): reads `Inventory.to_data()` JSON, writes the `BootstrapResult` as JSON.
    """
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m datacenter.driver")
    parser.add_argument("inventory_json")
    parser.add_argument("result_json")
    parser.add_argument("--limit", action="append")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    inventory = Inventory.from_data(json.loads(Path(args.inventory_json).read_text()))
    result = run_bootstrap(inventory, limit=args.limit, check=args.check)
    Path(args.result_json).write_text(json.dumps(result_to_data(result), default=str))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
