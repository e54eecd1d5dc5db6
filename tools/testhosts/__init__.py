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
like pkgs.k8s.io) served over HTTP on the control address. The Debian packages are Debian's; kubelet,
kubeadm, kubernetes-cni (loopback) and containerd 2.x are the Go-built toolchain's (scripts/toolchain.sh),
packaged with upstream's unit files; the repository also serves locally built OCI image archives (the
pause sandbox image and a workload image). Hosts are simulated (`kubernetes_node_simulated`: everything
but `kubeadm join`, then kwok nodes) except the ``real_hosts`` of `up`, which run the kubelet and
containerd and join a local control plane (realnode.py).

The base image and the repository are built once and cached under ``~/.cache/hybridml/testhosts``
(keyed by a hash of the recipe); per-host state lives under ``<repo>/.state/testhosts``. Everything
needs root. `down()` removes everything `up()` made, and is idempotent.
"""
from tools.testhosts.common import (
                                    BRIDGE,
                                    DEFAULT_CACHE_DIR,
                                    DEFAULT_STATE_DIR,
                                    KUBERNETES_VERSION,
                                    Log,
                                    TestHostError,
                                    debian_mirror,
                                    require_root,
)
from tools.testhosts.fleet import (
                                    Fleet,
                                    TestHost,
                                    current_owner,
                                    down,
                                    hosts_from_spec,
                                    network_for,
                                    status,
                                    up,
)
from tools.testhosts.image import Image, ensure_image, recipe_hash

__all__ = ["BRIDGE", "DEFAULT_CACHE_DIR", "DEFAULT_STATE_DIR", "KUBERNETES_VERSION", "Fleet", "Image", "Log",
           "TestHost", "TestHostError", "current_owner", "debian_mirror", "down", "ensure_image", "hosts_from_spec",
           "network_for", "recipe_hash", "require_root", "status", "up"]
