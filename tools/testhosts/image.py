"""The cached base root filesystem and the signed package repository the test hosts install from."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tools.testhosts.common import (
    BASE_PACKAGES,
    DEFAULT_CACHE_DIR,
    KUBERNETES_MINOR,
    KUBERNETES_PACKAGE_REVISION,
    KUBERNETES_VERSION,
    RECIPE,
    REPO_PACKAGES,
    SUITE,
    Log,
    _locked,
    _quiet,
    _run,
    debian_mirror,
    require_root,
)

# --------------------------------------------------------------------------- base image + repository

INIT_SCRIPT = r"""#!/bin/sh
# PID 1 of a hybridml test host (see tools/testhosts/). Named "init" so that Ansible's
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
