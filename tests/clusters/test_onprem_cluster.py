"""OnPremCluster: secret kubeconfig, baseline sized from the plan, node labels owned by the Ansible bootstrap."""
from __future__ import annotations

from google.protobuf import json_format

from clusters import sizing
from clusters.baseline import PRIORITY_CLASSES
from hybridml.ops.preview import PREVIEW_KUBECONFIG, SECRET_SIG
from infra import labels
from infra.loader import load_environment
from tests.pulumi_mocks import of_type, preview, where

DC = "dc-ashburn"


def test_provider_kubeconfig_is_a_pulumi_secret():
    result = preview("dev")
    (prov,) = [r for r in of_type(result, "pulumi:providers:kubernetes") if r.name == f"{DC}-k8s"]
    raw = json_format.MessageToDict(prov._struct)["kubeconfig"]
    # on the wire, a secret is {<sig>: <secret sig>, value: ...}: the engine encrypts it in the state
    assert isinstance(raw, dict) and SECRET_SIG in raw, "kubeconfig must reach the engine as a secret"
    assert prov.props["kubeconfig"] == PREVIEW_KUBECONFIG
    assert result.cluster_of_provider[prov.urn] == DC


def test_namespaces_priority_classes_and_quotas_from_the_plan():
    result = preview("dev")
    env = load_environment("dev")
    dc = env.site(DC)
    names = {r.props["metadata"]["name"] for r in of_type(result, "kubernetes:core/v1:Namespace", DC)}
    assert names == {labels.namespace_for(t) for t in dc.allowed_tiers} | {labels.GATEWAY_NAMESPACE,
                                                                           labels.MONITORING_NAMESPACE}
    # platform, data, serving, shadow, batch (clusters.baseline.PRIORITY_CLASSES)
    assert len(of_type(result, "kubernetes:scheduling.k8s.io/v1:PriorityClass", DC)) == len(PRIORITY_CLASSES) == 5
    quotas = {r.props["metadata"]["namespace"]: r for r in of_type(result, "kubernetes:core/v1:ResourceQuota", DC)}
    from policies.placement import solve

    plan = solve(env)
    for q in sizing.namespace_quotas(env, plan, DC):
        assert quotas[q.namespace].props["spec"]["hard"] == q.hard(), where(quotas[q.namespace])
    assert len(of_type(result, "kubernetes:core/v1:LimitRange", DC)) == len(quotas)


def test_gpu_datacenter_gets_the_gpu_operator():
    result = preview("prod", sites=("dc-ashburn", "dc-sanjose"))   # ashburn has L4 hosts, san jose none
    rel = of_type(result, "kubernetes:helm.sh/v3:Release", "dc-ashburn") + of_type(result, "kubernetes:helm.sh/v3:Release", "dc-sanjose")
    assert [result.cluster_of(r) for r in rel] == ["dc-ashburn"]
    assert rel[0].props["values"]["driver"]["enabled"] is True


def test_the_ansible_inventory_sets_every_node_label_the_workloads_select_on():
    """Node labels/taints on own hosts are set at kubeadm join (datacenter/), not patched by Pulumi."""
    from datacenter.inventory import node_labels

    env = load_environment("dev")
    dc = env.site(DC)
    for rack, host in dc.all_hosts():
        got = node_labels(dc, rack.name, rack.privacy_zone.value, host)
        for key in (labels.REGION, labels.ZONE, labels.DATACENTER, labels.RACK, labels.PRIVACY_ZONE):
            assert key in got, (host.name, key)
        assert got[labels.PRIVACY_ZONE] == rack.privacy_zone.value
