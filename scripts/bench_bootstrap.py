#!/usr/bin/env python3
"""Hosts bootstrapped per minute at two fleet sizes: one host at a time vs the rollout's parallelism, side by side.

    sudo .venv/bin/python scripts/bench_bootstrap.py [--sizes 6,18] [--modes serial,rollout] [--runs first|second]
                                                     [--strategy auto|linear|mitogen_linear] [--json out.json]

Fleets: the local spec's dc-local with its two racks grown to N/2 hosts each (a temporary spec: addresses
10.77.<rack>.11 on), as test hosts (tools/testhosts/: network namespaces, sshd, the cached image and package
repository). Every measurement starts from freshly created hosts, so each does the full first bootstrap
(`--runs second`: the idempotent re-run of bootstrapped hosts instead).

Modes: `serial` = one host per batch, forks 1; `rollout` = what `hybridml bootstrap` and the Pulumi racks do, one
rack per batch with the rack's hosts in parallel (max_fail_percentage per rack); `all` = every host in one batch.

Where the time goes, per mode: wall time; CPU-seconds from cgroup cpuacct, split into the control node (the
bench, ansible-playbook and its forks), the hosts (sshd, module interpreters, apt/dpkg, services) and the package
mirror; host-seconds per task from ansible-runner's events, grouped by kind (connect, facts, packages, services,
files, commands, other). CPU-seconds per host bound the rate on this machine: at most cores x 60 / (CPU-s per
host) hosts per minute, whatever the parallelism. Needs root; waits for test hosts a test run owns, and refuses
to replace ones made by hand unless --replace-fleet.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CGROUP_ROOT = Path("/sys/fs/cgroup/cpuacct")
GROUPS = ("controller", "hosts", "mirror")
KINDS = {  # task action -> kind of work
    "wait_for_connection": "connect", "setup": "facts", "apt": "packages", "apt_key": "packages",
    "deb822_repository": "packages", "dpkg_selections": "packages", "get_url": "packages",
    "service": "services", "systemd": "services", "systemd_service": "services", "sysvinit": "services",
    "copy": "files", "template": "files", "file": "files", "lineinfile": "files", "stat": "files",
    "command": "commands", "shell": "commands", "assert": "checks (controller only)",
    "debug": "checks (controller only)", "set_fact": "checks (controller only)",
    "include_tasks": "checks (controller only)", "import_tasks": "checks (controller only)",
}
MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "serial": ("serial: one host at a time", {"forks": 1, "serial": 1}),
    "rollout": ("rollout: a rack at a time, its hosts in parallel", {"serial": "rack"}),
    "all": ("all: every host at once", {"serial": "all"}),
}


class CpuAccount:
    """CPU time of groups of processes (cgroup v1 cpuacct); children stay in their parent's group."""

    def __init__(self) -> None:
        self.base = CGROUP_ROOT / f"hybridml-bench-{os.getpid()}"
        self.ok = (CGROUP_ROOT / "cpuacct.usage").exists()
        if self.ok:
            for group in GROUPS:
                (self.base / group).mkdir(parents=True, exist_ok=True)

    def add(self, group: str, pids: list[int]) -> None:
        if not self.ok:
            return
        for pid in pids:
            try:
                (self.base / group / "cgroup.procs").write_text(str(pid))
            except OSError:   # exited meanwhile
                pass

    def usage(self) -> dict[str, float]:
        if not self.ok:
            return {}
        return {g: int((self.base / g / "cpuacct.usage").read_text()) / 1e9 for g in GROUPS}

    def close(self) -> None:
        if not self.ok:
            return
        for group in GROUPS:
            for pid in (self.base / group / "cgroup.procs").read_text().split():
                try:
                    (CGROUP_ROOT / "cgroup.procs").write_text(pid)
                except OSError:
                    pass
            try:
                (self.base / group).rmdir()
            except OSError:
                pass
        try:
            self.base.rmdir()
        except OSError:
            pass


def scaled_spec(size: int, directory: Path) -> tuple[Path, str]:
    """The local spec with dc-local's racks grown (or shrunk) to size / racks hosts each."""
    from infra.loader import resolve_spec_path

    doc = yaml.safe_load(resolve_spec_path("local").read_text())
    dc = next(s for s in doc["sites"] if s.get("kind") == "datacenter")
    racks = dc["racks"]
    if size % len(racks) or not 0 < size // len(racks) <= 80:
        raise SystemExit(f"error: --sizes: {size} is not a multiple of {len(racks)} racks of at most 80 hosts")
    for rack in racks:
        (pool,) = rack["host_pools"]
        pool["count"] = size // len(racks)
    path = directory / f"local-{size}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, dc["name"]


def machine_cpu() -> dict[str, float]:
    """This machine's CPU-seconds so far (/proc/stat): busy (everyone's), iowait, idle."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return {"busy": (user + nice + system + irq + softirq + steal) / hz, "iowait": iowait / hz, "idle": idle / hz}


def netns_pids(fleet) -> list[int]:
    import subprocess

    pids: list[int] = []
    for host in fleet.hosts:
        out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    return pids


def task_profile(artifacts: Path) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """(task -> {host_seconds, hosts}, kind -> host_seconds) from ansible-runner's job events."""
    tasks: dict[str, dict[str, float]] = defaultdict(lambda: {"host_seconds": 0.0, "hosts": 0})
    kinds: dict[str, float] = defaultdict(float)
    for path in artifacts.glob("artifacts/*/job_events/*.json"):
        event = json.loads(path.read_text())
        if event.get("event") not in ("runner_on_ok", "runner_on_failed", "runner_on_skipped",
                                      "runner_on_unreachable"):
            continue
        data = event.get("event_data") or {}
        seconds = float(data.get("duration") or 0.0)
        task = (data.get("task") or "?").strip()
        action = (data.get("resolved_action") or data.get("task_action") or "").rsplit(".", 1)[-1]
        tasks[task]["host_seconds"] += seconds
        tasks[task]["hosts"] += 1
        kinds[KINDS.get(action, "other")] += seconds
    return dict(tasks), dict(kinds)


def measure(label: str, options: dict[str, Any], inventory, hosts: int, account: CpuAccount, fleet, workdir: Path,
            strategy: str | None, log) -> dict[str, Any]:
    from datacenter.driver import run_bootstrap

    opts = dict(options)
    if opts.get("serial") == "all":
        opts.update(serial=hosts, forks=hosts)
    account.add("hosts", netns_pids(fleet))
    account.add("mirror", [fleet.repo_server_pid] if fleet.repo_server_pid else [])
    account.add("controller", [os.getpid()])
    load = os.getloadavg()[0]
    before, machine_before, own_before = account.usage(), machine_cpu(), resource.getrusage(resource.RUSAGE_SELF)
    log(f"bench: {label}: {hosts} hosts (load average {load:.2f})")
    t0 = time.monotonic()
    result = run_bootstrap(inventory, keep_artifacts=True, workdir=workdir, strategy=strategy, **opts)
    seconds = time.monotonic() - t0
    after, machine_after, own_after = account.usage(), machine_cpu(), resource.getrusage(resource.RUSAGE_SELF)
    # the driver itself (ansible-runner turning Ansible's output into events, in this process), within "controller"
    driver = (own_after.ru_utime + own_after.ru_stime) - (own_before.ru_utime + own_before.ru_stime)
    machine = {k: round(machine_after[k] - machine_before[k], 1) for k in machine_after}
    finished = result.count("ok") + result.count("changed")
    if not result.ok:
        bad = [f"{h.name}: {h.status} {h.failed_task or ''} {h.message or ''}" for h in result.hosts.values()
               if h.status not in ("ok", "changed")]
        log("bench: not every host finished:\n  " + "\n  ".join(bad[:10]))
    cpu = {g: round(after[g] - before[g], 1) for g in after}
    if cpu:
        cpu["of which driver"] = round(driver, 1)
    tasks, kinds = task_profile(workdir)
    top = sorted(tasks.items(), key=lambda kv: -kv[1]["host_seconds"])[:8]
    row = {"mode": label, "hosts": finished, "seconds": round(seconds, 1),
           "hosts_per_minute": round(finished / seconds * 60, 2), "load_average_at_start": round(load, 2),
           "task_results_per_host": round(sum(v["hosts"] for v in tasks.values()) / max(finished, 1), 1),
           "cpu_seconds": cpu, "cpu_seconds_per_host": round(sum(cpu[g] for g in GROUPS) / max(finished, 1), 1) if cpu else None,
           # what else ran meanwhile: the machine's busy CPU-seconds not the bench's, and time waiting on the disk
           "machine_cpu_seconds": {**machine, "others": round(machine["busy"] - sum(cpu[g] for g in GROUPS), 1) if cpu else None},
           "task_host_seconds_per_host": {k: round(v / max(finished, 1), 1)
                                          for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
           "slowest_tasks": {name: round(v["host_seconds"] / max(finished, 1), 2) for name, v in top}}
    log(f"bench: {label}: {finished} hosts in {seconds:.1f}s, CPU {cpu}")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="6,18", help="fleet sizes, comma-separated (default 6,18)")
    parser.add_argument("--modes", default="serial,rollout", help=f"of {', '.join(MODES)} (default serial,rollout)")
    parser.add_argument("--runs", choices=["first", "second"], default="first",
                        help="first: fresh hosts each time (default); second: idempotent re-runs")
    parser.add_argument("--strategy", default=None, help="Ansible strategy (default: the driver's auto)")
    parser.add_argument("--replace-fleet", action="store_true", help="replace test hosts another process left up")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    from datacenter.driver import _ansible_env
    from datacenter.files import load_overrides
    from datacenter.inventory import build_inventory
    from infra.loader import load_environment
    from tools import testhosts

    if os.geteuid() != 0:
        print("error: needs root (test hosts are network namespaces)", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"error: --modes: unknown {', '.join(unknown)} (known: {', '.join(MODES)})", file=sys.stderr)
        return 2
    owner = testhosts.current_owner()
    if owner and not owner.get("pid") and not args.replace_fleet:
        # a fleet a test or benchmark owns is waited for (testhosts.up); one made by hand would be replaced
        print(f"error: test hosts of {owner['state_dir']} are up: one fleet per machine; take them down "
              "(scripts/testhosts.py down) or pass --replace-fleet", file=sys.stderr)
        return 2
    strategy = args.strategy or _ansible_env().get("ANSIBLE_STRATEGY")
    tmp = Path(tempfile.mkdtemp(prefix="hybridml-bench-"))
    state = tmp / "testhosts"
    account = CpuAccount()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, list[dict[str, Any]]] = {}
    try:
        for size in sizes:
            spec, dc = scaled_spec(size, tmp)
            env = load_environment(str(spec))
            _, hosts = testhosts.hosts_from_spec(str(spec), dc)
            fleet = None
            results[size] = []
            for mode in modes:
                label, options = MODES[mode]
                if fleet is None or args.runs == "first":
                    fleet = testhosts.up(hosts, datacenter=dc, state_dir=state, log=log, owner_pid=os.getpid(),
                                         wait_s=1800)
                inventory = build_inventory(env, dc, load_overrides(fleet.overrides_file))
                if args.runs == "second" and mode == modes[0]:
                    from datacenter.driver import run_bootstrap

                    run_bootstrap(inventory, strategy=strategy)   # bring them to the bootstrapped state first
                work = tmp / f"run-{size}-{mode}"
                results[size].append(measure(label, options, inventory, size, account, fleet, work, strategy, log))
                shutil.rmtree(work, ignore_errors=True)
    finally:
        testhosts.down(state)
        account.close()
        shutil.rmtree(tmp, ignore_errors=True)

    cores = os.cpu_count() or 1
    print(f"bootstrap benchmark: dc-local grown to {', '.join(map(str, sizes))} test hosts ({args.runs} runs, "
          f"Ansible strategy {strategy}, {cores} cores)")
    for size, rows in results.items():
        base = rows[0]["hosts_per_minute"] if rows else 0
        for row in rows:
            ratio = row["hosts_per_minute"] / base if base else float("nan")
            cpu = row["cpu_seconds_per_host"]
            ceiling = f"{cores * 60 / cpu:5.1f}" if cpu else "  n/a"
            print(f"  {size:>3} hosts  {row['mode']:<50} {row['seconds']:7.1f}s = {row['hosts_per_minute']:6.2f} "
                  f"hosts/min ({ratio:4.2f}x)  CPU {cpu} s/host -> ceiling {ceiling} hosts/min  "
                  f"(load {row['load_average_at_start']})")
            print(f"       {row['task_results_per_host']} task results per host; host-seconds per host by kind: "
                  f"{row['task_host_seconds_per_host']}")
            print(f"       CPU-seconds: {row['cpu_seconds']}; the machine meanwhile: {row['machine_cpu_seconds']}")
    if args.json:
        args.json.write_text(json.dumps({"sizes": {str(k): v for k, v in results.items()}, "strategy": strategy,
                                         "runs": args.runs, "cores": cores}, indent=2) + "\n")
    return 0 if all(r["hosts"] == size for size, rows in results.items() for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
