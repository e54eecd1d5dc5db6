"""The baseline every cluster gets, and the readiness gate handed to the workloads as `ClusterHandle.ready`."""
from __future__ import annotations

from clusters.baseline import PRIORITY_CLASSES, namespaces
from clusters.kube_baseline import READY_GATE_NAME, READY_GATE_NAMESPACE
from infra import labels
from infra.spec import PrivacyTier
from tests.pulumi_mocks import in_cluster, of_type, preview


def test_namespace_specs_pin_pss_to_the_cluster_version():
    specs = namespaces("s", [PrivacyTier.pii, PrivacyTier.public], gpu_operator=False, kubernetes_version="1.33")
    assert [n.name for n in specs] == ["ml-public", "ml-pii", labels.GATEWAY_NAMESPACE, labels.MONITORING_NAMESPACE]
    for n in specs:
        assert n.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert n.labels["pod-security.kubernetes.io/enforce-version"] == "v1.33"
    assert specs[1].labels[labels.PRIVACY_TIER] == "pii"


def test_priority_classes_order_platform_over_data_over_serving_over_shadow():
    values = [p.value for p in PRIORITY_CLASSES]
    assert values == sorted(values, reverse=True)
    assert PRIORITY_CLASSES[-1].preempting is False


def test_the_gate_waits_for_the_whole_baseline_and_workloads_wait_for_the_gate():
    result = preview("dev")
    for site in result.sites:
        gates = [r for r in of_type(result, "kubernetes:core/v1:ConfigMap", site)
                 if r.props["metadata"]["name"] == READY_GATE_NAME]
        assert len(gates) == 1, site
        gate = gates[0]
        assert gate.props["metadata"]["namespace"] == READY_GATE_NAMESPACE
        assert gate.props["data"]["site"] == site and gate.props["data"]["simulated"] == "false"
        baseline = {r.urn for r in result.resources if in_cluster(result, r, site) and r.type in (
            "kubernetes:core/v1:Namespace", "kubernetes:core/v1:ResourceQuota",
            "kubernetes:scheduling.k8s.io/v1:PriorityClass", "kubernetes:core/v1:LimitRange")}
        assert baseline and baseline <= set(gate.dependencies), site
        # workload objects on this cluster (outside its component) wait for the gate
        workload_objs = [r for r in result.resources if r.custom and result.cluster_of(r) == site
                         and not in_cluster(result, r, site) and r.type.startswith("kubernetes:")]
        if workload_objs:   # workloads/ passes handle.ready as depends_on (workloads.kube.child_options)
            waiting = sum(gate.urn in r.dependencies for r in workload_objs)
            assert waiting > len(workload_objs) // 2, (site, waiting, len(workload_objs))
