"""The Pod Security Standards' safe sysctls follow the cluster's Kubernetes version (upstream PSS v1.37)."""
from __future__ import annotations

from policies.rules import RULES_BY_NAME, Context, SiteFacts, evaluate
from policies.rules.pod_security import SAFE_SYSCTLS, safe_sysctls
from tests.policies.fixtures import deployment, edit, pod

NEW_IN_1_37 = {"net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat"}


def test_the_safe_set_grows_with_the_version():
    assert "net.ipv4.ip_local_port_range" in safe_sysctls((1, 25))
    assert "net.ipv4.tcp_rmem" not in safe_sysctls((1, 31)) and "net.ipv4.tcp_rmem" in safe_sysctls((1, 32))
    assert not NEW_IN_1_37 & safe_sysctls((1, 36)) and NEW_IN_1_37 <= safe_sysctls((1, 37)) == SAFE_SYSCTLS
    assert "kernel.msgmax" not in SAFE_SYSCTLS


def _with_sysctl(name):
    return edit(deployment("gpu"), lambda p: pod(p)["securityContext"].update(sysctls=[{"name": name, "value": "1"}]))


def _findings(r, ctx):
    return [f.message for f in evaluate([RULES_BY_NAME["pss-sysctls"]], [r], ctx)]


def test_a_1_37_sysctl_passes_on_a_1_37_cluster_and_not_on_an_older_one():
    r = _with_sysctl("net.ipv4.tcp_notsent_lowat")
    assert _findings(r, Context()) == []                                    # the latest level (1.37)
    old = Context(sites={"gpu": SiteFacts("gpu", "cloud", ("public",), ("L4",), (1, 33))})
    assert any("not safe on Kubernetes 1.33" in m for m in _findings(r, old))
    assert _findings(r, Context(pss_version=(1, 36)))                       # unknown cluster, 1.36 level


def test_unsafe_sysctls_fail_at_every_version():
    for version in ((1, 30), (1, 37)):
        assert _findings(_with_sysctl("kernel.msgmax"), Context(pss_version=version))
