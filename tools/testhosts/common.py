"""What the test-host image and fleet share: paths, pins, errors and small helpers (see the package doc)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
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
#: containerd is not Debian's (1.6, too old for Kubernetes 1.36): the repository packages the toolchain's 2.x.
REPO_PACKAGES = ["runc", "chrony", "prometheus-node-exporter", "kmod"]


def _toolchain_pins() -> dict[str, str]:
    path = REPO_ROOT / "scripts" / "toolchain" / "versions.env"
    pins = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isupper() and not line.startswith("#"):
            pins[key.strip()] = value.strip()
    return pins


#: The Kubernetes, containerd and CNI packages of the repository are the toolchain's builds
#: (scripts/toolchain.sh kubernetes-node containerd cni-plugins node-images) at these pins.
TOOLCHAIN_PINS = _toolchain_pins()
KUBERNETES_VERSION = TOOLCHAIN_PINS["KUBERNETES_VERSION"]
CONTAINERD_VERSION = TOOLCHAIN_PINS["CONTAINERD_VERSION"]
CNI_PLUGINS_VERSION = TOOLCHAIN_PINS["CNI_PLUGINS_VERSION"]
KUBERNETES_PACKAGE_REVISION = "1.1"
KUBERNETES_MINOR = ".".join(KUBERNETES_VERSION.split(".")[:2])
#: Bump when the way the image or repository is built changes.
RECIPE = "6"

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
