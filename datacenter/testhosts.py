"""Test hosts for the datacenter bootstrap: real sshd, real apt, real Ansible, on this machine.

Each test host is

- its own network namespace (`ip netns`, named ``hml-<host>``) holding only the host's spec address
  (e.g. 10.77.1.11), joined by a veth pair to a bridge ``hmlbr0`` in the control node's namespace,
  which holds the control address (the first address of the hosts' /16, e.g. 10.77.0.1). There is no
  default route in a host: nothing a host sends can leave this machine;
- its own root filesystem: an overlay of a per-host upper directory over one cached, debootstrapped
  Debian bookworm (minbase + openssh-server, python3, python3-apt, sudo, iproute2, procps);
- its own mount, PID, UTS and IPC namespaces (``unshare``), with ``/usr/local/sbin/init`` as PID 1:
  a small sysvinit-style init that starts the ``/etc/rc2.d/S*`` services (so `ansible.builtin.service`
  sees a ``sysvinit`` host) and reaps children. ``/proc/sys`` is read-only except ``/proc/sys/net``
  (like LXC's ``proc:mixed``), so a bootstrap cannot change the shared kernel of this machine;
- its own ssh host key; the control node's key (``<state>/id_ed25519``) is authorised for root and
  every host key is pinned in ``<state>/known_hosts``.

The hosts have no route out, so packages come from the control node: a small signed apt repository
(a subset of Debian bookworm with what the roles install, and a flat Kubernetes repository laid out
like pkgs.k8s.io) served over HTTP on the control address. The Debian packages are the real ones; the
kubelet/kubeadm packages are stand-ins (real Kubernetes packages cannot be fetched here and a real
kubelet could not join anyway): they install the real file layout (binaries, kubelet.service and the
kubeadm drop-in) with binaries that only answer ``--version``/``version``. The roles are told the
target is simulated (`kubernetes_node_simulated`), which skips only `kubeadm join`.

The base image and the repository are built once and cached under ``~/.cache/hybridml/testhosts``
(keyed by a hash of the recipe); per-host state lives under ``<repo>/.state/testhosts``. Everything
needs root. `down()` removes everything `up()` made, and is idempotent.
"""
from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".state" / "testhosts"
# $HYBRIDML_CACHE, as scripts/toolchain.sh reads it: one cache root for the toolchain and the test hosts
DEFAULT_CACHE_DIR = Path(os.environ.get("HYBRIDML_CACHE") or Path.home() / ".cache" / "hybridml") / "testhosts"

SUITE = "bookworm"
BRIDGE = "hmlbr0"
NETNS_PREFIX = "hml-"
VETH_PREFIX = "hmlv"
REPO_PORT = 8079

#: Baked into the base image: what a freshly installed server has before any bootstrap.
BASE_PACKAGES = ["openssh-server", "python3", "python3-apt", "sudo", "iproute2", "procps"]
#: Served by the control node's repository: what the roles install (with dependencies not in the base).
REPO_PACKAGES = ["containerd", "chrony", "prometheus-node-exporter", "kmod"]
#: Stand-in Kubernetes packages (see the module docstring).
KUBERNETES_VERSION = "1.33.4"
KUBERNETES_PACKAGE_REVISION = "1.1"
KUBERNETES_MINOR = ".".join(KUBERNETES_VERSION.split(".")[:2])
#: Bump when the way the image or repository is built changes.
RECIPE = "5"

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class TestHostError(RuntimeError):
    """A test host could not be created, reached or removed."""


# --------------------------------------------------------------------------- small helpers


def _run(cmd: list[str], *, check: bool = True, capture: bool = True, input: str | None = None,
         env: dict | None = None, timeout: float | None = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, input=input, text=True, capture_output=capture, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise TestHostError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{(proc.stderr or '')[-4000:]}")
    return proc


def require_root() -> None:
    if os.geteuid() != 0:
        raise TestHostError("test hosts need root (network namespaces, overlay mounts, debootstrap)")
    missing = [tool for tool in ("ip", "unshare", "nsenter", "debootstrap", "dpkg-deb", "dpkg-scanpackages",
                                 "gpg", "ssh-keygen", "ssh", "chroot", "mount")
               if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        raise TestHostError(f"missing tools: {', '.join(missing)} "
                            "(apt-get install debootstrap iproute2 util-linux dpkg-dev gnupg openssh-client)")


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (sources.list or deb822 .sources), for debootstrap."""
    if os.environ.get("HYBRIDML_DEBIAN_MIRROR"):
        return os.environ["HYBRIDML_DEBIAN_MIRROR"]
    files = [Path("/etc/apt/sources.list")] + sorted(Path("/etc/apt/sources.list.d").glob("*"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith((" ", "#")):
                        key, _, value = line.partition(":")
                        fields[key.strip().lower()] = value.strip()
                if SUITE in fields.get("suites", "").split() and "main" in fields.get("components", "").split():
                    return fields.get("uris", "").split()[0]
        else:
            for line in text.splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 4 and parts[0] == "deb":
                    words = [p for p in parts[1:] if not p.startswith("[")]
                    if len(words) >= 3 and words[1] == SUITE and "main" in words[2:]:
                        return words[0]
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- base image + repository

INIT_SCRIPT = r"""#!/bin/sh
# PID 1 of a hybridml test host (see datacenter/testhosts.py). Named "init" so that Ansible's
# service_mgr fact falls back to sysvinit: services are the /etc/init.d scripts, enabled ones are
# the /etc/rc2.d/S* links, started here like runlevel 2 would.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mkdir -p /run/lock /run/sshd
chmod 0755 /run/sshd
for s in /etc/rc2.d/S*; do
    [ -x "$s" ] && "$s" start </dev/null
done
echo "test host $(hostname) up"
stop() {
    for s in /etc/rc2.d/S*; do
        [ -x "$s" ] && "$s" stop </dev/null >/dev/null 2>&1
    done
    kill -TERM -1 2>/dev/null
    sleep 1
    kill -KILL -1 2>/dev/null
    exit 0
}
trap stop TERM INT
# A shell that waits reaps every child, adopted orphans included.
while :; do
    sleep 3600 &
    wait $!
done
"""

KUBELET_STUB = """#!/bin/sh
# Stand-in kubelet of the hybridml test repository: real package layout, no real kubelet.
case "$1" in
    --version) echo "Kubernetes v{version}" ;;
    *) echo "kubelet: simulated package (hybridml test hosts) cannot run a kubelet" >&2; exit 1 ;;
esac
"""

KUBEADM_STUB = """#!/bin/sh
# Stand-in kubeadm of the hybridml test repository: real package layout, no real kubeadm.
if [ "$1" = version ]; then
    if [ "$2" = "-o" ] && [ "$3" = short ]; then echo "v{version}"; else echo 'kubeadm version: &version.Info{{GitVersion:"v{version}"}}'; fi
    exit 0
fi
echo "kubeadm: simulated package (hybridml test hosts) cannot $1" >&2
exit 1
"""

KUBELET_SERVICE = """[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

KUBEADM_DROPIN = """# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
"""


def recipe_hash() -> str:
    material = json.dumps({"recipe": RECIPE, "suite": SUITE, "base": BASE_PACKAGES, "repo": REPO_PACKAGES,
                           "k8s": [KUBERNETES_VERSION, KUBERNETES_PACKAGE_REVISION], "init": INIT_SCRIPT,
                           "stubs": [KUBELET_STUB, KUBEADM_STUB, KUBELET_SERVICE, KUBEADM_DROPIN]},
                          sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Image:
    """A built base root filesystem and the package repository that goes with it."""

    dir: Path

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def repo(self) -> Path:
        return self.dir / "repo"


def ensure_image(cache_dir: Path = DEFAULT_CACHE_DIR, *, log: Log = _quiet, rebuild: bool = False) -> Image:
    """The cached base image + repository for the current recipe, built if missing (about 2 minutes)."""
    require_root()
    image = Image(cache_dir / f"bookworm-{recipe_hash()}")
    with _locked(cache_dir / ".build.lock"):
        if (image.dir / ".complete").exists() and not rebuild:
            log(f"base image: cached at {image.dir}")
            return image
        tmp = cache_dir / f".build-{os.getpid()}"
        _remove_tree(tmp)
        tmp.mkdir(parents=True)
        t0 = time.monotonic()
        try:
            _build_rootfs(Image(tmp), cache_dir, log)
            _build_repo(Image(tmp), log)
        except BaseException:
            _remove_tree(tmp)
            raise
        (tmp / ".complete").write_text(json.dumps({"recipe": recipe_hash(), "built": time.time(),
                                                   "seconds": round(time.monotonic() - t0, 1)}))
        _remove_tree(image.dir)
        tmp.rename(image.dir)
        for old in cache_dir.glob("bookworm-*"):
            if old != image.dir:
                _remove_tree(old)
        log(f"base image: built in {time.monotonic() - t0:.0f}s at {image.dir}")
        return image


def _remove_tree(path: Path) -> None:
    if path.exists():
        # never follow mounts out of a half-built chroot
        for line in Path("/proc/mounts").read_text().splitlines():
            mountpoint = line.split()[1]
            if mountpoint.startswith(str(path) + "/"):
                subprocess.run(["umount", "-l", mountpoint], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def _build_rootfs(image: Image, cache_dir: Path, log: Log) -> None:
    mirror = debian_mirror()
    debs = cache_dir / "debootstrap-debs"
    debs.mkdir(parents=True, exist_ok=True)
    log(f"base image: debootstrap --variant=minbase {SUITE} from {mirror} (about a minute)")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", f"--cache-dir={debs}",
          SUITE, str(image.rootfs), mirror], timeout=1800)
    root = image.rootfs
    # what the roles install comes from the control node's repository: download it here, once
    (root / "etc/apt/sources.list").write_text(f"deb {mirror} {SUITE} main\n")
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    log("base image: downloading the packages the roles install, for the test repository")
    _run(["chroot", str(root), "apt-get", "-q", "update"], timeout=900)
    _run(["chroot", str(root), "apt-get", "clean"])
    _run(["chroot", str(root), "apt-get", "-q", "-y", "--no-install-recommends", "--download-only", "install",
          *REPO_PACKAGES], timeout=900)
    pool = image.repo / "debian" / "pool" / "main"
    pool.mkdir(parents=True)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        shutil.move(str(deb), pool / deb.name)
    _run(["chroot", str(root), "apt-get", "clean"])
    # a server as it comes out of the installer, minus anything pointing outside
    (root / "etc/apt/sources.list").write_text("")
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    (root / "etc/resolv.conf").unlink()
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # each host gets its own at creation
    init = root / "usr/local/sbin/init"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    # apt inside a host: no recommends unless asked, never prompt
    (root / "etc/apt/apt.conf.d/90hybridml-testhost").write_text(
        'APT::Install-Recommends "false";\nDpkg::Options { "--force-confdef"; "--force-confold"; };\n')


def _build_repo(image: Image, log: Log) -> None:
    log("base image: building the signed test repository (Debian subset + stand-in Kubernetes packages)")
    repo = image.repo
    gnupg = image.dir / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(gnupg))
    _run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
          "hybridml test repository <testhosts@hybridml.invalid>", "ed25519", "sign", "never"], env=env)
    key = _run(["gpg", "--batch", "--armor", "--export"], env=env).stdout
    (repo / "hybridml-test-repo.asc").write_text(key)

    # Debian subset: a normal dists/ tree, so hosts use it exactly like a Debian mirror
    debian = repo / "debian"
    binary = debian / "dists" / SUITE / "main" / "binary-amd64"
    binary.mkdir(parents=True)
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "pool/main", "/dev/null"], cwd=debian,
                              capture_output=True, text=True, check=True).stdout
    _write_index(binary, packages)
    _write_release(debian / "dists" / SUITE, debian / "dists" / SUITE, origin="hybridml-test", suite=SUITE,
                   components="main", env=env)

    # Kubernetes: a flat repository like pkgs.k8s.io/core:/stable:/v1.33/deb/ ("deb URL /")
    flat = repo / "kubernetes" / f"v{KUBERNETES_MINOR}" / "deb"
    flat.mkdir(parents=True)
    version = f"{KUBERNETES_VERSION}-{KUBERNETES_PACKAGE_REVISION}"
    with tempfile.TemporaryDirectory() as tmp:
        _stub_deb(Path(tmp), flat, "kubelet", version, {
            "usr/bin/kubelet": (KUBELET_STUB.format(version=KUBERNETES_VERSION), 0o755),
            "lib/systemd/system/kubelet.service": (KUBELET_SERVICE, 0o644),
        }, "Kubernetes node agent (hybridml test-host stand-in)")
        _stub_deb(Path(tmp), flat, "kubeadm", version, {
            "usr/bin/kubeadm": (KUBEADM_STUB.format(version=KUBERNETES_VERSION), 0o755),
            "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf": (KUBEADM_DROPIN, 0o644),
        }, "Kubernetes cluster bootstrapping tool (hybridml test-host stand-in)", depends="kubelet")
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=flat,
                              capture_output=True, text=True, check=True).stdout
    _write_index(flat, packages)
    _write_release(flat, flat, origin="hybridml-test-kubernetes", suite="", components="", env=env)
    (flat / "Release.key").write_text(key)
    # the signing key is only needed here: stop its agent and drop it
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True)
    shutil.rmtree(gnupg, ignore_errors=True)


def _stub_deb(tmp: Path, out: Path, name: str, version: str, files: dict[str, tuple[str, int]],
              description: str, depends: str | None = None) -> None:
    root = tmp / name
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
    control = [f"Package: {name}", f"Version: {version}", "Architecture: amd64",
               "Maintainer: hybridml <testhosts@hybridml.invalid>", "Section: admin", "Priority: optional"]
    if depends:
        control.append(f"Depends: {depends}")
    control.append(f"Description: {description}")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
    _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out / f"{name}_{version}_amd64.deb")])


def _write_index(directory: Path, packages: str) -> None:
    (directory / "Packages").write_text(packages)
    with gzip.open(directory / "Packages.gz", "wt") as handle:
        handle.write(packages)


def _write_release(release_dir: Path, base: Path, *, origin: str, suite: str, components: str, env: dict) -> None:
    lines = [f"Origin: {origin}", f"Label: {origin}"]
    if suite:
        lines += [f"Suite: {suite}", f"Codename: {suite}"]
    lines += ["Architectures: amd64"]
    if components:
        lines.append(f"Components: {components}")
    lines.append("Date: " + time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime()))
    sums = []
    for path in sorted(base.rglob("Packages*")):
        data = path.read_bytes()
        sums.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {path.relative_to(base)}")
    lines += ["SHA256:"] + sums
    release = release_dir / "Release"
    release.write_text("\n".join(lines) + "\n")
    _run(["gpg", "--batch", "--yes", "--clearsign", "-o", str(release_dir / "InRelease"), str(release)], env=env)
    _run(["gpg", "--batch", "--yes", "--armor", "--detach-sign", "-o", str(release_dir / "Release.gpg"),
          str(release)], env=env)


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
    def load(cls, state_dir: Path = DEFAULT_STATE_DIR) -> "Fleet | None":
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
       wait_s: float = 0) -> Fleet:
    """Create the test hosts (after removing any left from before) and wait until sshd answers on each.

    owner_pid: the process that will remove the fleet again (a test session); while it lives, another
    `up` waits up to its `wait_s` instead of replacing the fleet.
    """
    require_root()
    state_dir = Path(state_dir).resolve()
    _claim(state_dir, owner_pid, wait_s, log)
    image = ensure_image(cache_dir, log=log)
    control, prefix = network_for(a for _, a, _ in hosts)
    state_dir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(state_dir=state_dir, image=str(image.dir), datacenter=datacenter, control_address=control,
                  prefix_len=prefix, repo_url=f"http://{control}:{REPO_PORT}", repo_server_pid=None)
    for i, (name, address, rack) in enumerate(hosts):
        fleet.hosts.append(TestHost(name=name, address=address, rack=rack, index=i,
                                    netns=f"{NETNS_PREFIX}{name}"[:64], veth=f"{VETH_PREFIX}{i}"))
    fleet.save()  # from here on, down() can clean up whatever exists
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
    log = open(hdir / "console.log", "ab")
    proc = subprocess.Popen(["ip", "netns", "exec", host.netns, "unshare", "--mount", "--pid", "--uts", "--ipc",
                             "--fork", "--kill-child", "--propagation", "private", "sh", "-c", setup],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    host.pid = proc.pid
    key = (merged / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    return f"{host.address} {key[0]} {key[1]}\n"


def _write_overrides(fleet: Fleet, pubkey: str) -> None:
    """The inventory overrides that point a bootstrap of the spec's hosts at these test hosts."""
    import yaml

    repo = fleet.repo_url
    data = {
        "datacenter": fleet.datacenter,
        "vars": {
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
        },
    }
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
