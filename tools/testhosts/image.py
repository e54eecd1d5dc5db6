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
    CNI_PLUGINS_VERSION,
    CONTAINERD_VERSION,
    DEFAULT_CACHE_DIR,
    KUBERNETES_MINOR,
    KUBERNETES_PACKAGE_REVISION,
    KUBERNETES_VERSION,
    RECIPE,
    REPO_PACKAGES,
    SUITE,
    Log,
    TestHostError,
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

#: What the repository packages from the Go-built toolchain (scripts/toolchain.sh): name -> tool.
TOOLCHAIN_FILES = {"kubelet": "kubernetes-node", "kubeadm": "kubernetes-node", "containerd": "containerd",
                   "ctr": "containerd", "containerd-shim-runc-v2": "containerd",
                   "systemd/containerd.service": "containerd", "cni/loopback": "cni-plugins",
                   "node-images/images.json": "node-images", "node-images/pause.tar": "node-images",
                   "node-images/hello.tar": "node-images"}
TOOLCHAIN_BUILD = "scripts/toolchain.sh kubernetes-node containerd cni-plugins node-images"

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


def toolchain_files() -> dict[str, Path]:
    """The toolchain's files the repository packages (TOOLCHAIN_FILES), or TestHostError naming the build."""
    from hybridml.local.toolchain import toolchain_bin_dirs

    found, missing = {}, []
    for rel in TOOLCHAIN_FILES:
        path = next((d / rel for d in toolchain_bin_dirs() if (d / rel).is_file()), None)
        if path is None:
            missing.append(rel)
        else:
            found[rel] = path.resolve()
    if missing:
        raise TestHostError(f"the test hosts' package repository needs the toolchain's {', '.join(missing)} "
                            f"(searched {', '.join(str(d) for d in toolchain_bin_dirs())}): run {TOOLCHAIN_BUILD}")
    return found


def _toolchain_stamps(files: dict[str, Path]) -> list[str]:
    """What identifies the toolchain's builds: the .complete stamp of each tool directory (version, recipe, time)."""
    stamps = set()
    for path in files.values():
        for parent in path.parents:
            if (parent / ".complete").is_file():
                stamps.add(f"{parent.name}:{(parent / '.complete').read_text()}")
                break
    return sorted(stamps)


def recipe_hash() -> str:
    material = json.dumps({"recipe": RECIPE, "suite": SUITE, "base": BASE_PACKAGES, "repo": REPO_PACKAGES,
                           "k8s": [KUBERNETES_VERSION, KUBERNETES_PACKAGE_REVISION, CONTAINERD_VERSION,
                                   CNI_PLUGINS_VERSION], "init": INIT_SCRIPT,
                           "units": [KUBELET_SERVICE, KUBEADM_DROPIN],
                           "toolchain": _toolchain_stamps(toolchain_files())},
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
        mounts = Path("/proc/mounts").read_text()
        for old in cache_dir.glob("bookworm-*"):
            # a fleet still running on an older image keeps it (its overlays sit on it); the next build drops it
            if old != image.dir and f"lowerdir={old}/" not in mounts:
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
    log("base image: building the signed test repository (Debian subset, the toolchain's Kubernetes node "
        "packages and containerd, node images)")
    tc = toolchain_files()
    repo = image.repo
    gnupg = image.dir / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(gnupg))
    _run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
          "hybridml test repository <testhosts@hybridml.invalid>", "ed25519", "sign", "never"], env=env)
    key = _run(["gpg", "--batch", "--armor", "--export"], env=env).stdout
    (repo / "hybridml-test-repo.asc").write_text(key)

    # Debian subset: a normal dists/ tree, so hosts use it exactly like a Debian mirror. Its containerd is
    # the toolchain's 2.x (a site's mirror must carry one too: Debian bookworm's 1.6 is too old).
    debian = repo / "debian"
    _deb(debian / "pool" / "main", "containerd", f"{CONTAINERD_VERSION}-1", {
        "usr/bin/containerd": tc["containerd"], "usr/bin/ctr": tc["ctr"],
        "usr/bin/containerd-shim-runc-v2": tc["containerd-shim-runc-v2"],
        "lib/systemd/system/containerd.service": tc["systemd/containerd.service"].read_text().replace(
            "/usr/local/bin/containerd", "/usr/bin/containerd"),
    }, "container runtime (containerd v2, built by hybridml's toolchain)", depends="runc")
    binary = debian / "dists" / SUITE / "main" / "binary-amd64"
    binary.mkdir(parents=True)
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "pool/main", "/dev/null"], cwd=debian,
                              capture_output=True, text=True, check=True).stdout
    _write_index(binary, packages)
    _write_release(debian / "dists" / SUITE, debian / "dists" / SUITE, origin="hybridml-test", suite=SUITE,
                   components="main", env=env)

    # Kubernetes: a flat repository like pkgs.k8s.io/core:/stable:/v1.36/deb/ ("deb URL /"), same packages
    flat = repo / "kubernetes" / f"v{KUBERNETES_MINOR}" / "deb"
    flat.mkdir(parents=True)
    version = f"{KUBERNETES_VERSION}-{KUBERNETES_PACKAGE_REVISION}"
    _deb(flat, "kubernetes-cni", f"{CNI_PLUGINS_VERSION}-{KUBERNETES_PACKAGE_REVISION}",
         {"opt/cni/bin/loopback": tc["cni/loopback"]}, "CNI plugins (loopback only, built by hybridml's toolchain)")
    _deb(flat, "kubelet", version, {"usr/bin/kubelet": tc["kubelet"], "lib/systemd/system/kubelet.service": KUBELET_SERVICE},
         "Kubernetes node agent (built by hybridml's toolchain)", depends="kubernetes-cni")
    _deb(flat, "kubeadm", version, {"usr/bin/kubeadm": tc["kubeadm"],
                                    "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf": KUBEADM_DROPIN},
         "Kubernetes cluster bootstrapping tool (built by hybridml's toolchain)", depends="kubelet")
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", ".", "/dev/null"], cwd=flat,
                              capture_output=True, text=True, check=True).stdout
    _write_index(flat, packages)
    _write_release(flat, flat, origin="hybridml-test-kubernetes", suite="", components="", env=env)
    (flat / "Release.key").write_text(key)
    # the images no registry serves here (sandbox + workload), for the containerd role to import
    (repo / "images").mkdir()
    for rel in ("node-images/images.json", "node-images/pause.tar", "node-images/hello.tar"):
        shutil.copyfile(tc[rel], repo / "images" / Path(rel).name)
    # the signing key is only needed here: stop its agent and drop it
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, capture_output=True)
    shutil.rmtree(gnupg, ignore_errors=True)


def _deb(out: Path, name: str, version: str, files: dict[str, Path | str], description: str,
         depends: str | None = None) -> None:
    """A binary package of `files` (package path -> a file to copy, or text for a 0644 file)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        for rel, source in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, Path):
                shutil.copyfile(source, path)
                path.chmod(0o755)
            else:
                path.write_text(source)
                path.chmod(0o644)
        control = [f"Package: {name}", f"Version: {version}", "Architecture: amd64",
                   "Maintainer: hybridml <testhosts@hybridml.invalid>", "Section: admin", "Priority: optional"]
        if depends:
            control.append(f"Depends: {depends}")
        control.append(f"Description: {description}")
        (root / "DEBIAN").mkdir()
        (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        # uncompressed: ~200 MB of Go binaries, served over the local bridge; every host unpacks them
        _run(["dpkg-deb", "--root-owner-group", "-Znone", "--build", str(root),
              str(out / f"{name}_{version}_amd64.deb")])


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
