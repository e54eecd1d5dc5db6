"""Test hosts that run a real kubelet: what the machine gives them, and how they reach a control plane.

A test host that runs a kubelet and containerd (README "On-prem racks") needs more of the machine than
one that is only bootstrapped:

- cgroups: the host's /sys is the sysfs of its network namespace, without the machine's cgroup mounts, so
  the host mounts the machine's cgroup hierarchies itself (`setup_lines`). There is no cgroup namespace:
  the hierarchies are the machine's, so each real host's kubelet gets a cgroup root of its own,
  ``/hybridml-testhosts/<host>`` (made here, removed by `cleanup`), and its pods' cgroups go under it;
- /dev/kmsg, which the kubelet's OOM watcher reads;
- the kernel settings the kubelet refuses to run without (protectKernelDefaults: vm.overcommit_memory=1,
  kernel.panic=10, kernel.panic_on_oops=1, ...). The kernel is the machine's and a host cannot write its
  /proc/sys (read-only but for net.*), so `prepare_machine` sets them on the machine while the fleet is up
  and `cleanup` restores the values it found (recorded in <state>/realnode.json);
- the control plane: a local API server listens on the machine's loopback only, and its certificate names
  127.0.0.1; `attach` runs a relay (relay.py) that makes 127.0.0.1:<its port> inside the host's network
  namespace reach it, and writes the host's join settings into the fleet's overrides file.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tools.testhosts.common import REPO_ROOT, TestHostError

if TYPE_CHECKING:
    from hybridml.local.kubeadm import JoinSettings

# a tools.testhosts.fleet.Fleet (fleet.py imports this module: no import back)
Fleet = Any

CGROUP_PARENT = "hybridml-testhosts"
#: What keeps pods that cannot run here (images nobody can pull) off a real test host.
LOCAL_IMAGES_TAINT = "hybridml.io/local-images-only=true:NoSchedule"
ROLE_DEFAULTS = REPO_ROOT / "datacenter" / "roles" / "kubernetes_node" / "defaults" / "main.yml"


def kubelet_kernel_settings() -> dict[str, str]:
    """The sysctls the kubelet insists on, as the kubernetes_node role checks them."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return {key: str(value) for key, value in defaults["kubernetes_node_required_sysctls"].items()}


def cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mount point, fstype, options) of this machine's cgroup hierarchies under /sys/fs/cgroup."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        mountpoint = pre.split()[4]
        fstype, _, super_opts = post.split()[:3]
        if fstype in ("cgroup", "cgroup2") and (mountpoint + "/").startswith("/sys/fs/cgroup/"):
            opts = [o for o in super_opts.split(",") if o not in ("rw", "ro")]
            out.append((mountpoint, fstype, ",".join(opts)))
    return out


def cgroup_v1() -> bool:
    return not Path("/sys/fs/cgroup/cgroup.controllers").exists()


def setup_lines() -> str:
    """Shell lines of a real host's setup script ($R: its root): the machine's cgroups, /dev/kmsg."""
    lines = []
    mounts = cgroup_mounts()
    if any(m == "/sys/fs/cgroup" for m, _, _ in mounts):
        lines.append('mount -t cgroup2 -o nsdelegate cgroup2 "$R/sys/fs/cgroup"')
    else:
        lines.append('mount -t tmpfs -o mode=0755,nosuid,nodev,noexec cgroup "$R/sys/fs/cgroup"')
        for mountpoint, fstype, opts in mounts:
            # a named hierarchy (name=systemd) has no controllers: "none" says so
            if opts and all(o.startswith("name=") for o in opts.split(",")):
                opts = "none," + opts
            option = f" -o {opts}" if opts else ""
            lines.append(f'mkdir -p "$R{mountpoint}" && mount -t {fstype}{option} {fstype} "$R{mountpoint}"')
    lines.append('mknod -m 0600 "$R/dev/kmsg" c 1 11')
    return "\n".join(lines) + "\n"


def _state_file(state_dir: Path) -> Path:
    return state_dir / "realnode.json"


def _load(state_dir: Path) -> dict[str, Any]:
    try:
        return json.loads(_state_file(state_dir).read_text())
    except (OSError, ValueError):
        return {}


def _save(state_dir: Path, data: dict[str, Any]) -> None:
    _state_file(state_dir).write_text(json.dumps(data, indent=2) + "\n")


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def prepare_machine(state_dir: Path, hosts: list[str]) -> None:
    """Before real hosts start: their cgroup roots, and the kernel settings their kubelets need (the values
    found are recorded first, so that `cleanup` restores them even after a crash)."""
    data = _load(state_dir)
    wanted = kubelet_kernel_settings()
    found = data.setdefault("sysctls_before", {})
    for key in wanted:
        found.setdefault(key, _sysctl_path(key).read_text().strip())
    data["cgroup_roots"] = sorted(set(data.get("cgroup_roots", [])) | {f"/{CGROUP_PARENT}/{h}" for h in hosts})
    _save(state_dir, data)
    for key, value in wanted.items():
        _sysctl_path(key).write_text(value)
    for mountpoint, _, _ in cgroup_mounts():
        for root in data["cgroup_roots"]:
            Path(mountpoint + root).mkdir(parents=True, exist_ok=True)
        if not cgroup_v1() and mountpoint == "/sys/fs/cgroup":
            # cgroup v2: the kubelet's controllers must be delegated down to its root
            enabled = (Path(mountpoint) / "cgroup.subtree_control").read_text().split()
            (Path(mountpoint) / CGROUP_PARENT / "cgroup.subtree_control").write_text(
                " ".join(f"+{c}" for c in enabled))


def host_vars(fleet: Fleet, host: str) -> dict[str, Any]:
    """Host vars of a real host, the join settings aside (see `attach`)."""
    images = f"{fleet.repo_url}/images"
    return {
        "kubernetes_node_simulated": False,
        "kubernetes_node_cgroup_root": f"/{CGROUP_PARENT}/{host}",
        "kubernetes_node_extra_taints": [LOCAL_IMAGES_TAINT],
        "containerd_cni_loopback_only": True,
        "containerd_image_archives": [f"{images}/pause.tar", f"{images}/hello.tar"],
    }


def images(fleet: Fleet) -> dict[str, str]:
    """The image references of the repository's archives: {"sandbox": ..., "workload": ...}."""
    return json.loads((Path(fleet.image) / "repo" / "images" / "images.json").read_text())


def attach(fleet: Fleet, host: str, join: JoinSettings, *, join_timeout: str | None = None) -> None:
    """Let a real host join a local control plane: a relay from 127.0.0.1:<API port> inside the host to the
    API server, and the host's join settings in the fleet's overrides file."""
    if host not in fleet.real_hosts:
        raise TestHostError(f"{host} is not a real test host (real: {', '.join(fleet.real_hosts) or 'none'})")
    listen_host, _, port = join.endpoint.rpartition(":")
    data = _load(fleet.state_dir)
    relays = data.setdefault("relays", {})
    if host in relays:
        _stop_relay(relays.pop(host))
    log = open(fleet.state_dir / f"relay-{host}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "tools.testhosts.relay", "--netns", fleet.host(host).netns,
                             "--listen", join.endpoint, "--to", f"{listen_host}:{port}"], cwd=REPO_ROOT,
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    relays[host] = proc.pid
    _save(fleet.state_dir, data)
    _wait_listening(fleet, host, int(port), proc)
    join_vars = {"kubernetes_node_api_endpoint": join.endpoint, "kubernetes_node_join_token": join.token,
                 "kubernetes_node_ca_cert_hash": join.ca_cert_hash}
    if join_timeout:
        join_vars["kubernetes_node_join_timeout"] = join_timeout
    set_host_vars(fleet, host, join_vars)


def _wait_listening(fleet: Fleet, host: str, port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TestHostError(f"the API relay into {host} exited ({proc.returncode}): see "
                                f"{fleet.state_dir}/relay-{host}.log")
        ns = subprocess.run(["ip", "netns", "exec", fleet.host(host).netns, sys.executable, "-c",
                             f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"],
                            capture_output=True)
        if ns.returncode == 0:
            return
        time.sleep(0.2)
    raise TestHostError(f"the API relay into {host} does not listen on 127.0.0.1:{port}")


def set_host_vars(fleet: Fleet, host: str, values: dict[str, Any]) -> None:
    """Merge host vars into the fleet's overrides file (hosts.<host>.vars)."""
    text = fleet.overrides_file.read_text()
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    data = yaml.safe_load(text) or {}
    entry = data.setdefault("hosts", {}).setdefault(host, {})
    entry.setdefault("vars", {}).update(values)
    fleet.overrides_file.write_text(header + yaml.safe_dump(data, sort_keys=False, width=200))


def _stop_relay(pid: int) -> None:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        if b"tools.testhosts.relay" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)


def cleanup(state_dir: Path) -> list[str]:
    """Undo `prepare_machine` and `attach` (after the hosts' processes are gone): relays stopped, cgroup
    roots removed, kernel settings restored. Idempotent."""
    data = _load(state_dir)
    if not data:
        return []
    done = []
    for host, pid in data.get("relays", {}).items():
        _stop_relay(pid)
        done.append(f"API relay into {host}")
    leftovers = []
    for mountpoint, _, _ in cgroup_mounts():
        parent = Path(mountpoint) / CGROUP_PARENT
        if not parent.is_dir():
            continue
        for _ in range(50):  # a memory cgroup lingers while its last pages are reclaimed
            for directory in sorted((p for p in parent.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                                    reverse=True) + [parent]:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            if not parent.exists():
                break
            time.sleep(0.1)
        else:
            leftovers.append(str(parent))
    if data.get("cgroup_roots"):
        done.append("cgroups " + ", ".join(data["cgroup_roots"]))
    for key, value in data.get("sysctls_before", {}).items():
        with contextlib.suppress(OSError):
            if _sysctl_path(key).read_text().strip() != value:
                _sysctl_path(key).write_text(value)
                done.append(f"{key}={value}")
    _state_file(state_dir).unlink(missing_ok=True)
    done += [f"cgroups still in use, left in place: {path}" for path in leftovers]
    return done


def local_control_plane(spec: str, datacenter: str) -> tuple[str, Path] | None:
    """(cluster, state dir) of the datacenter's local control plane if its API server runs, else None."""
    from hybridml.local.controlplane import status
    from hybridml.local.fromspec import cluster_name
    from hybridml.local.paths import state_dir_for
    from infra.loader import load_environment

    state_dir = state_dir_for(load_environment(spec).name)
    name = cluster_name(datacenter)
    cluster = status(state_dir).get(name)
    return (name, state_dir) if cluster is not None and cluster.components.get("kube-apiserver") else None


def join_local_control_plane(fleet: Fleet, cluster: str, state_dir: Path) -> None:
    """Make the local control plane joinable (kubeadm's phases) and attach every real host of the fleet to it.
    `hybridml local up` made every datacenter host a kwok node: those of the real hosts go (their kubelets
    register the real ones; `local up` leaves a real kubelet's Node alone, hybridml/local/nodes.py)."""
    from hybridml.local.controlplane import api_client
    from hybridml.local.kubeadm import make_joinable
    from infra.kube import KWOK_NODE_ANNOTATION

    api = api_client(cluster, state_dir)
    try:
        for host in fleet.real_hosts:
            node = api.get_or_none(f"/api/v1/nodes/{host}")
            if node is not None and KWOK_NODE_ANNOTATION in (node["metadata"].get("annotations") or {}):
                api.delete(f"/api/v1/nodes/{host}")
    finally:
        api.close()
    join = make_joinable(cluster, state_dir)
    for host in fleet.real_hosts:
        attach(fleet, host, join)
