"""LocalCluster (the `local` stack): kubeconfig contexts from config, simulated handles, same baseline."""
from __future__ import annotations

import pulumi
import pytest

from clusters.sizing import QuotaPlan
from infra.loader import load_environment
from tests.pulumi_mocks import of_type, preview


def test_local_mode_builds_one_local_cluster_per_site_from_kubeconfig_contexts():
    result = preview("local", mode="local")
    env = load_environment("local")
    assert result.sites == [s.name for s in env.sites]
    provs = {r.name: r.props for r in of_type(result, "pulumi:providers:kubernetes")}
    for site in result.sites:
        p = provs[f"{site}-k8s"]
        assert p["kubeconfig"] == ".local/kubeconfig" and p["context"] == f"hybridml-{site}"
        assert p["deleteUnreachable"] in (True, "true")
    types = {r.type for r in result.resources}
    assert not any(t.startswith("aws:") for t in types)
    assert "kubernetes:helm.sh/v3:Release" not in types   # kwok nodes: no Karpenter, no GPU operator
    assert result.exports["sites"]  # exported summary exists


def test_context_overrides_from_config():
    result = preview("local", mode="local", config=(("hybridml:localContexts", '{"dc-local": "my-dc"}'),
                                                    ("hybridml:localKubeconfig", "elsewhere/kc")))
    provs = {r.name: r.props for r in of_type(result, "pulumi:providers:kubernetes")}
    assert provs["dc-local-k8s"]["context"] == "my-dc"
    assert provs["aws-use1-k8s"]["context"] == "hybridml-aws-use1"
    assert provs["aws-use1-k8s"]["kubeconfig"] == "elsewhere/kc"


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        return f"{args.name}-id", args.inputs

    def call(self, args):
        return {}


@pytest.fixture
def stock_mocks():
    """The stock mock monitor (the component must not depend on the preview's fast monitor)."""
    from pulumi.runtime import settings

    settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(_Mocks(), project="hybridml", stack="unit", preview=False)
    yield


def test_component_under_the_stock_mock_monitor(stock_mocks):
    from clusters.local_cluster import LocalCluster, LocalClusterArgs

    env = load_environment("local")
    site = env.site("dc-local")
    quota = QuotaPlan(namespace="ml-pii", tier="pii", cpu=4, memory_gib=8, gpus=0, pods=20)

    @pulumi.runtime.test
    def check():
        c = LocalCluster("dc-local", LocalClusterArgs(site=site, quotas=[quota], gpu_types=[]))
        assert c.handle.simulated is True and c.handle.kind == "datacenter"
        assert c.handle.privacy_tiers == ["public", "internal", "pii"]
        ns = c.baseline.namespaces

        def verify(args):
            urn, labels_ = args
            assert urn.endswith("::dc-local-k8s"), urn
            assert labels_["pod-security.kubernetes.io/enforce"] == "restricted", urn

        return pulumi.Output.all(c.provider.urn, ns["ml-pii"].metadata.labels).apply(verify)

    check()
