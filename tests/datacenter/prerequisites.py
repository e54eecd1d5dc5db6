"""What the real-Ansible datacenter tests need from the machine: root (network namespaces, overlay mounts), the
tools of tools/testhosts and ansible-runner; the real-node test also the Go-built kubelet/kubeadm and packages."""
from __future__ import annotations

import os
import shutil
import subprocess

HOST_TOOLS = ("ip", "unshare", "nsenter", "debootstrap", "dpkg-scanpackages", "gpg", "ssh", "ssh-keygen", "openssl")


def missing_for_test_hosts() -> str | None:
    """Why test hosts cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "not root: test hosts need network namespaces and overlay mounts"
    for tool in HOST_TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install iproute2 util-linux debootstrap dpkg-dev gnupg openssh-client)"
    probe = subprocess.run(["ip", "netns", "add", "hml-probe"], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "delete", "hml-probe"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    try:
        import ansible_runner  # noqa: F401
    except ImportError:
        return "ansible-runner not installed in this virtualenv"
    return None


def missing_for_real_node() -> str | None:
    """Why a real kubelet cannot join here: the test hosts' needs, then the Go-built node tools and packages."""
    reason = missing_for_test_hosts()
    if reason:
        return reason
    from hybridml.local.toolchain import find_binaries
    from infra.errors import ToolchainMissing
    from tools.testhosts import TestHostError
    from tools.testhosts.image import toolchain_files

    try:
        find_binaries()
        find_binaries(("kubeadm",))
        toolchain_files()
    except (ToolchainMissing, TestHostError) as exc:  # both name the build to run
        return str(exc)
    return None
