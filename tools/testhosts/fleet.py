"""Test hosts up and down: network namespaces, overlay roots, sshd, the repository server."""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools.testhosts import realnode
from tools.testhosts.common import (
    BRIDGE,
    DEFAULT_CACHE_DIR,
    DEFAULT_STATE_DIR,
    KUBERNETES_MINOR,
    KUBERNETES_VERSION,
    NETNS_PREFIX,
    REPO_PORT,
    VETH_PREFIX,
    Log,
    TestHostError,
    _locked,
    _quiet,
    _run,
    require_root,
)
from tools.testhosts.image import Image, ensure_image

# --------------------------------------------------------------------------- fleet


@dataclass
class TestHost:
    name: str
    address: str
    rack: str
    index: int
    netns: str
    veth: str
    pid: int | None = None  # the `unshare` process; its child is the host's PID 1

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Fleet:
    """What `up()` made: enough for `down()`, the tests and the driver."""

    state_dir: Path
    image: str
    datacenter: str | None
    control_address: str
    prefix_len: int
    repo_url: str
    repo_server_pid: int | None
    hosts: list[TestHost] = field(default_factory=list)
    real_hosts: list[str] = field(default_factory=list)  # run a real kubelet (realnode.py)

    @property
    def key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def overrides_file(self) -> Path:
        return self.state_dir / "inventory-overrides.yaml"

    def host(self, name: str) -> TestHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def host_dir(self, name: str) -> Path:
        return self.state_dir / "hosts" / name

    def root(self, name: str) -> Path:
        return self.host_dir(name) / "merged"

    def save(self) -> None:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        (self.state_dir / "fleet.json").write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path = DEFAULT_STATE_DIR) -> Fleet | None:
        path = Path(state_dir) / "fleet.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["state_dir"] = Path(data["state_dir"])
        data["hosts"] = [TestHost(**h) for h in data["hosts"]]
        return cls(**data)

    # ---- access used by tests and the benchmark

    def ssh(self, name: str, command: str, *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a command on a host over real SSH, as the bootstrap does."""
        host = self.host(name)
        cmd = ["ssh", "-i", str(self.key), "-o", f"UserKnownHostsFile={self.known_hosts}",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
               "-o", "ControlPath=none", f"root@{host.address}", command]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise TestHostError(f"ssh {name} {command!r} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def exec(self, name: str, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside a host's namespaces and root, without SSH (for breaking and repairing it)."""
        pid = _host_init_pid(self.host(name))
        if pid is None:
            raise TestHostError(f"test host {name} is not running")
        return _run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", *argv], check=check)

    def stop_sshd(self, name: str) -> list[int]:
        """Kill every sshd process of a host (the listener and open sessions, ControlPersist ones included)."""
        init = _host_init_pid(self.host(name))
        if init is None:
            return []
        pidns = os.readlink(f"/proc/{init}/ns/pid")
        killed = []
        for pid in _pids():
            try:
                if os.readlink(f"/proc/{pid}/ns/pid") == pidns and Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        _wait_port(self.host(name).address, 22, up=False, timeout=10)
        return killed

    def start_sshd(self, name: str) -> None:
        self.exec(name, ["/etc/init.d/ssh", "start"])
        _wait_port(self.host(name).address, 22, up=True, timeout=20)


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _host_init_pid(host: TestHost) -> int | None:
    """PID (in our namespace) of the host's PID 1: the child of its `unshare` process."""
    if not host.pid:
        return None
    try:
        children = Path(f"/proc/{host.pid}/task/{host.pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    return int(children[0]) if children else None


def _wait_port(address: str, port: int, *, up: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                is_up = True
        except OSError:
            is_up = False
        if is_up == up:
            return
        time.sleep(0.2)
    raise TestHostError(f"{address}:{port} did not go {'up' if up else 'down'} within {timeout:.0f}s")


def network_for(addresses: Iterable[str]) -> tuple[str, int]:
    """The control address and prefix: the /16 that holds every host address, its first address for us."""
    addrs = [ipaddress.IPv4Address(a) for a in addresses]
    nets = {ipaddress.IPv4Network(f"{a}/16", strict=False) for a in addrs}
    if len(nets) != 1:
        raise TestHostError(f"test host addresses must share one /16; got {sorted(str(n) for n in nets)}")
    net = nets.pop()
    if not (net.subnet_of(ipaddress.IPv4Network("10.0.0.0/8")) or net.subnet_of(ipaddress.IPv4Network("172.16.0.0/12"))
            or net.subnet_of(ipaddress.IPv4Network("192.168.0.0/16"))):
        raise TestHostError(f"test host addresses must be private; got {net}")
    control = net.network_address + 1
    if control in addrs:
        raise TestHostError(f"{control} is the control node's address on the test network; no host may use it")
    for line in _run(["ip", "-4", "route", "show"]).stdout.splitlines():
        dest = line.split()[0]
        if dest != "default" and "dev " + BRIDGE not in line:
            with contextlib.suppress(ValueError):
                if ipaddress.IPv4Network(dest, strict=False).overlaps(net):
                    raise TestHostError(f"{net} overlaps a route of this machine ({line.strip()}); "
                                        "pick other test addresses")
    return str(control), 16


def hosts_from_spec(spec: str, datacenter: str | None = None) -> tuple[str, list[tuple[str, str, str]]]:
    """(datacenter, [(host, address, rack)]) from a spec's datacenter, in spec order."""
    from infra.loader import load_environment

    env = load_environment(spec)
    dcs = env.datacenters
    if datacenter:
        dcs = [d for d in dcs if d.name == datacenter]
        if not dcs:
            raise TestHostError(f"no datacenter {datacenter!r} in {spec} "
                                f"(known: {', '.join(d.name for d in env.datacenters)})")
    if len(dcs) != 1:
        raise TestHostError(f"{spec} has {len(dcs)} datacenters; pick one with --datacenter")
    dc = dcs[0]
    return dc.name, [(h.name, str(h.address), rack.name) for rack, h in dc.all_hosts()]


# One fleet at a time per machine: the hosts use the spec's addresses, one bridge and fixed namespace
# names. The marker says which state dir owns the fleet and, for a fleet made by a test or benchmark,
# which process: a live owner is waited for, a fleet without one (`scripts/testhosts.py up`, a
# developer's scratch fleet) or with a dead owner is replaced.
OWNER_FILE = Path("/run/hybridml-testhosts.json")
LOCK_FILE = Path("/run/lock/hybridml-testhosts.lock")


def current_owner() -> dict | None:
    try:
        return json.loads(OWNER_FILE.read_text())
    except (OSError, ValueError):
        return None


def _claim(state_dir: Path, owner_pid: int | None, wait_s: float, log: Log) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        with _locked(LOCK_FILE):
            owner = current_owner()
            other = owner and Path(owner.get("state_dir", "")) != state_dir
            busy = other and owner.get("pid") and _alive(int(owner["pid"]))
            if not busy:
                if other:
                    log(f"test hosts: replacing the fleet of {owner['state_dir']}")
                    down(Path(owner["state_dir"]), log=log, _locked_already=True)
                down(state_dir, log=log, _locked_already=True)
                OWNER_FILE.write_text(json.dumps({"state_dir": str(state_dir), "pid": owner_pid,
                                                  "since": time.time()}) + "\n")
                return
        if time.monotonic() >= deadline:
            raise TestHostError(f"the test hosts are in use by process {owner['pid']} (state {owner['state_dir']}); "
                                "one fleet at a time per machine: wait for it or stop it")
        log(f"test hosts: in use by process {owner['pid']}, waiting")
        time.sleep(5)


def up(hosts: list[tuple[str, str, str]], *, datacenter: str | None = None, state_dir: Path = DEFAULT_STATE_DIR,
       cache_dir: Path = DEFAULT_CACHE_DIR, log: Log = _quiet, owner_pid: int | None = None,
       wait_s: float = 0, real_hosts: Iterable[str] = ()) -> Fleet:
    """Create the test hosts (after removing any left from before) and wait until sshd answers on each.

    owner_pid: the process that will remove the fleet again (a test session); while it lives, another
    `up` waits up to its `wait_s` instead of replacing the fleet.
    real_hosts: hosts that get what a real kubelet needs (realnode.py); the others are bootstrapped only.
    """
    require_root()
    state_dir = Path(state_dir).resolve()
    _claim(state_dir, owner_pid, wait_s, log)
    real = list(real_hosts)
    unknown = sorted(set(real) - {name for name, _, _ in hosts})
    if unknown:
        raise TestHostError(f"real hosts {', '.join(unknown)} are not among the test hosts")
    image = ensure_image(cache_dir, log=log)
    control, prefix = network_for(a for _, a, _ in hosts)
    state_dir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(state_dir=state_dir, image=str(image.dir), datacenter=datacenter, control_address=control,
                  prefix_len=prefix, repo_url=f"http://{control}:{REPO_PORT}", repo_server_pid=None,
                  real_hosts=real)
    for i, (name, address, rack) in enumerate(hosts):
        fleet.hosts.append(TestHost(name=name, address=address, rack=rack, index=i,
                                    netns=f"{NETNS_PREFIX}{name}"[:64], veth=f"{VETH_PREFIX}{i}"))
    fleet.save()  # from here on, down() can clean up whatever exists
    if real:
        realnode.prepare_machine(state_dir, real)
    t0 = time.monotonic()
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hybridml-testhosts", "-f", str(fleet.key)])
    pubkey = Path(str(fleet.key) + ".pub").read_text()
    _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    _run(["ip", "addr", "add", f"{control}/{prefix}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    fleet.repo_server_pid = _start_repo_server(image, control, state_dir)
    fleet.save()
    known = []
    for host in fleet.hosts:
        known.append(_create_host(fleet, host, image, pubkey))
        fleet.save()
    fleet.known_hosts.write_text("".join(known))
    for host in fleet.hosts:
        _wait_port(host.address, 22, up=True, timeout=30)
    _wait_port(control, REPO_PORT, up=True, timeout=10)
    _write_overrides(fleet, pubkey)
    log(f"test hosts: {len(fleet.hosts)} up in {time.monotonic() - t0:.1f}s "
        f"(repository {fleet.repo_url}, state {state_dir})")
    return fleet


def _start_repo_server(image: Image, address: str, state_dir: Path) -> int:
    log = open(state_dir / "repo-server.log", "ab")
    proc = subprocess.Popen(["python3", "-m", "http.server", str(REPO_PORT), "--bind", address,
                             "--directory", str(image.repo)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    return proc.pid


def _create_host(fleet: Fleet, host: TestHost, image: Image, pubkey: str) -> str:
    hdir = fleet.host_dir(host.name)
    for sub in ("upper", "work", "merged"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
    merged = hdir / "merged"
    _run(["mount", "-t", "overlay", "overlay", "-o",
          f"lowerdir={image.rootfs},upperdir={hdir / 'upper'},workdir={hdir / 'work'}", str(merged)])
    # identity: hostname, hosts file, own ssh host key, the control node's key for root
    (merged / "etc/hostname").write_text(host.name + "\n")
    (merged / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n{host.address}\t{host.name}\n")
    # no DNS server on the test network; the file every server has (the kubelet builds pods' from it)
    (merged / "etc/resolv.conf").write_text("# test host: no DNS server on the test network\n")
    hostkey = merged / "etc/ssh/ssh_host_ed25519_key"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}", "-f", str(hostkey)])
    auth = merged / "root/.ssh/authorized_keys"
    auth.write_text(pubkey)
    auth.chmod(0o600)
    # network: own namespace, veth into the bridge, the spec address, no default route
    _run(["ip", "netns", "add", host.netns])
    _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns])
    _run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
    _run(["ip", "-n", host.netns, "addr", "add", f"{host.address}/{fleet.prefix_len}", "dev", "eth0"])
    _run(["ip", "-n", host.netns, "link", "set", "eth0", "up"])
    _run(["ip", "-n", host.netns, "link", "set", "lo", "up"])
    setup = textwrap.dedent(f"""\
        set -e
        R={merged}
        mount -t proc proc "$R/proc"
        # kernel-wide sysctls read-only, the namespaced network ones writable (LXC's proc:mixed)
        mount --bind "$R/proc/sys" "$R/proc/sys"
        mount -o remount,bind,ro "$R/proc/sys"
        mount --bind "$R/proc/sys/net" "$R/proc/sys/net"
        mount -o remount,bind,rw "$R/proc/sys/net"
        mount --rbind /sys "$R/sys"
        mount -o remount,bind,ro "$R/sys" || true
        mount -t tmpfs -o mode=0755,size=16m,nosuid tmpfs "$R/dev"
        for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
            n=${{d%%:*}}; rest=${{d#*:}}; mknod -m 0666 "$R/dev/$n" c ${{rest%%:*}} ${{rest#*:}}
        done
        mkdir -p "$R/dev/pts" "$R/dev/shm"
        mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
        ln -s pts/ptmx "$R/dev/ptmx"
        ln -s /proc/self/fd "$R/dev/fd"
        mount -t tmpfs -o mode=1777,size=64m tmpfs "$R/dev/shm"
        mount -t tmpfs -o mode=0755,size=128m,nosuid,nodev tmpfs "$R/run"
        hostname {host.name}
        exec chroot "$R" /usr/local/sbin/init
        """)
    if host.name in fleet.real_hosts:
        setup = setup.replace("hostname ", realnode.setup_lines() + "hostname ", 1)
    log = open(hdir / "console.log", "ab")
    proc = subprocess.Popen(["ip", "netns", "exec", host.netns, "unshare", "--mount", "--pid", "--uts", "--ipc",
                             "--fork", "--kill-child", "--propagation", "private", "sh", "-c", setup],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    host.pid = proc.pid
    key = (merged / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    return f"{host.address} {key[0]} {key[1]}\n"


def _write_overrides(fleet: Fleet, pubkey: str) -> None:
    """The inventory overrides that point a bootstrap of the spec's hosts at these test hosts."""
    import hashlib

    import yaml

    repo = fleet.repo_url
    data = {
        "datacenter": fleet.datacenter,
        "vars": {
            # New hosts (new host keys) are new machines: this changes every rack's inventory fingerprint, so
            # the Pulumi rack resources bootstrap a re-created fleet instead of trusting their stale state.
            "hybridml_testhosts_fleet": hashlib.sha256(fleet.known_hosts.read_bytes()).hexdigest()[:16],
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(fleet.key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={fleet.known_hosts} -o StrictHostKeyChecking=yes",
            # namespaces share this machine's kernel and cannot run a kubelet: see the roles' README
            "base_os_kernel_shared": True,
            "kubernetes_node_simulated": True,
            "base_os_apt_mirror_url": f"{repo}/debian",
            "base_os_apt_mirror_key_url": f"{repo}/hybridml-test-repo.asc",
            "base_os_ntp_servers": [],
            "base_os_admin_users": [{"name": "hybridml", "ssh_authorized_keys": [pubkey.strip()]}],
            "kubernetes_node_apt_repo_url": f"{repo}/kubernetes/v{KUBERNETES_MINOR}/deb/",
            "kubernetes_node_apt_key_url": f"{repo}/kubernetes/v{KUBERNETES_MINOR}/deb/Release.key",
            "kubernetes_node_version": KUBERNETES_VERSION,
            # containerd on every host as the machine allows: an overlay root (no overlayfs snapshots on it),
            # a root without CAP_SYS_RESOURCE here; the kubelet's cgroup version (realnode.py)
            "containerd_snapshotter": "native",
            "containerd_restrict_oom_score_adj": True,
            "containerd_sandbox_image": realnode.images(fleet)["sandbox"],
            "kubernetes_node_allow_cgroup_v1": realnode.cgroup_v1(),
        },
    }
    if fleet.real_hosts:
        data["hosts"] = {name: {"vars": realnode.host_vars(fleet, name)} for name in fleet.real_hosts}
    if fleet.datacenter is None:
        data.pop("datacenter")
    header = ("# Written by scripts/testhosts.py up: points a bootstrap of the spec's hosts at the local\n"
              "# test hosts (network namespaces on this machine). Pass it as --overrides.\n")
    fleet.overrides_file.write_text(header + yaml.safe_dump(data, sort_keys=False, width=200))


def down(state_dir: Path = DEFAULT_STATE_DIR, *, log: Log = _quiet, _locked_already: bool = False) -> list[str]:
    """Remove every test host, the bridge and the repository server. Idempotent; returns what it removed.

    Namespaces and the bridge are only swept when this state dir owns the fleet (or nobody does)."""
    state_dir = Path(state_dir).resolve()
    if not _locked_already:
        with _locked(LOCK_FILE):
            return down(state_dir, log=log, _locked_already=True)
    owner = current_owner()
    ours = owner is None or Path(owner.get("state_dir", "")) == state_dir
    removed: list[str] = []
    fleet = Fleet.load(state_dir)
    if fleet:
        for host in fleet.hosts:
            init = _host_init_pid(host)
            if init:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for host in fleet.hosts:
            while host.pid and _alive(host.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if host.pid and _alive(host.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(host.pid, signal.SIGKILL)  # --kill-child takes the host's PID 1 with it
        if fleet.repo_server_pid and _alive(fleet.repo_server_pid) and _is_repo_server(fleet.repo_server_pid):
            os.kill(fleet.repo_server_pid, signal.SIGTERM)
            removed.append(f"repository server (pid {fleet.repo_server_pid})")
    # whatever is left in our namespaces (also after a lost state file): processes by pid, then the namespaces
    netns = [line.split()[0] for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines()
             if line.strip()] if ours else []
    for ns in netns:
        if not ns.startswith(NETNS_PREFIX):
            continue
        pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for _ in range(50):
            if not _run(["ip", "netns", "pids", ns], check=False).stdout.split():
                break
            time.sleep(0.1)
        _run(["ip", "netns", "delete", ns], check=False)
        removed.append(f"netns {ns}")
    if ours and _run(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        _run(["ip", "link", "delete", BRIDGE], check=False)
        removed.append(f"bridge {BRIDGE}")
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines() if ours else []:
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(VETH_PREFIX):
            _run(["ip", "link", "delete", name], check=False)
    if ours and owner is not None:
        OWNER_FILE.unlink(missing_ok=True)
    # after the hosts' processes: their relays, cgroups and the kernel settings of real hosts
    for item in realnode.cleanup(state_dir):
        removed.append(item)
    # overlay mounts under the state dir, deepest first
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mountpoint in sorted((m for m in mounts if m.startswith(str(state_dir) + "/")), key=len, reverse=True):
        if _run(["umount", mountpoint], check=False).returncode != 0:
            _run(["umount", "-l", mountpoint], check=False)
        removed.append(f"mount {mountpoint}")
    if state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)
        removed.append(f"state {state_dir}")
    if removed:
        log("test hosts: removed " + ", ".join(removed[:6]) + (f" and {len(removed) - 6} more" if len(removed) > 6 else ""))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def _is_repo_server(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return b"http.server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def status(state_dir: Path = DEFAULT_STATE_DIR) -> list[dict]:
    """One row per host: name, address, rack, running, sshd answering."""
    fleet = Fleet.load(Path(state_dir).resolve())
    if fleet is None:
        return []
    rows = []
    for host in fleet.hosts:
        running = _host_init_pid(host) is not None
        try:
            with socket.create_connection((host.address, 22), timeout=1):
                ssh = True
        except OSError:
            ssh = False
        rows.append({"name": host.name, "address": host.address, "rack": host.rack, "netns": host.netns,
                     "running": running, "sshd": ssh})
    return rows
