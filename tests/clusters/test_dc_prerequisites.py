"""What a datacenter cluster must hold beforehand (hybridml/ops/prerequisites.py, pure), on hand-made objects; the live
check against a real control plane is tests/e2e/test_preflight_datacenter.py."""
from __future__ import annotations

from hybridml.ops.prerequisites import ClusterSnapshot, missing, requirements
from policies.rules.base import ResourceView

DC = "dc"


def _k8s(kind: str, api: str, name: str, ns: str | None = None, cluster: str = DC, **fields) -> ResourceView:
    meta = {"name": name} | ({"namespace": ns} if ns else {}) | fields.pop("meta", {})
    group_version = api if "/" in api else f"core/{api}"
    return ResourceView(f"kubernetes:{group_version}:{kind}", name, {"apiVersion": api, "kind": kind, "metadata": meta,
                                                                     **fields}, cluster=cluster)


def _release(name: str, cluster: str = DC) -> ResourceView:
    return ResourceView("kubernetes:helm.sh/v3:Release", name, {"name": name}, cluster=cluster)


NS = _k8s("Namespace", "v1", "ml")
FLINK = _k8s("FlinkDeployment", "flink.apache.org/v1beta1", "ingest", "ml")
GATEWAY = _k8s("Gateway", "gateway.networking.k8s.io/v1", "fleet", "ml", spec={"gatewayClassName": "hybridml"})
CLASS = _k8s("GatewayClass", "gateway.networking.k8s.io/v1", "hybridml")
REDIS = _k8s("StatefulSet", "apps/v1", "redis", "ml", spec={"volumeClaimTemplates": [{"spec": {}}], "template": {"spec": {
    "containers": [{"name": "r", "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "store-keys", "key": "k"}}}]}]}}})
LB = _k8s("Service", "v1", "redis-fleet", "ml", spec={"type": "LoadBalancer"},
          meta={"annotations": {"metallb.universe.tf/address-pool": "fleet"}})


def test_a_kind_needs_a_crd_unless_the_program_installs_its_operator_there():
    views = [NS, FLINK, GATEWAY, CLASS, _release("envoy-gateway"), _release("flink-kubernetes-operator", cluster="aws")]
    reqs = requirements(DC, views)
    crds = [(q.group, q.version, q.kind) for q in reqs if q.what == "crd"]
    assert crds == [("flink.apache.org", "v1beta1", "FlinkDeployment")]     # the other cluster's release does not count
    assert "flink-kubernetes-operator 1.13.0" in reqs[0].fix and "FlinkDeployment ml/ingest" in reqs[0].needed_by
    own_crd = _k8s("CustomResourceDefinition", "apiextensions.k8s.io/v1", "flinkdeployments.flink.apache.org",
                   spec={"group": "flink.apache.org", "names": {"kind": "FlinkDeployment"}})
    assert [q for q in requirements(DC, [*views, own_crd]) if q.what == "crd"] == []


def test_unnamed_storage_class_address_pools_and_referents_are_required():
    reqs = {(q.what, q.kind, q.name) for q in requirements(DC, [NS, REDIS, LB])}
    assert ("default-storage-class", "StorageClass", "") in reqs
    assert ("address-pool", "IPAddressPool", "fleet") in reqs
    assert ("object", "Secret", "store-keys") in reqs
    simulated = {(q.what, q.name) for q in requirements(DC, [NS, REDIS, LB], simulated=True)}
    assert ("address-pool", "fleet") not in simulated          # a simulated cluster's load balancers are kwok's
    made = _k8s("Secret", "v1", "store-keys", "ml")
    assert ("object", "Secret", "store-keys") not in {(q.what, q.kind, q.name) for q in requirements(DC, [NS, REDIS, made])}


def test_missing_says_why_a_crd_does_not_serve():
    (req,) = [q for q in requirements(DC, [NS, FLINK]) if q.what == "crd"]
    key = ("flink.apache.org", "FlinkDeployment")
    name = "flinkdeployments.flink.apache.org"
    cases = [
        (ClusterSnapshot(), "no CRD serves FlinkDeployment"),
        (ClusterSnapshot(crds={key: (name, frozenset({"v1"}), True)}), "serves v1, not v1beta1"),
        (ClusterSnapshot(crds={key: (name, frozenset({"v1beta1"}), False)}), "not Established"),
        (ClusterSnapshot(crds={key: (name, frozenset({"v1beta1"}), True)}), "discovery does not list"),
    ]
    for snap, reason in cases:
        (found,) = missing([req], snap)
        assert reason in found.reason, (reason, found.reason)
    ok = ClusterSnapshot(crds={key: (name, frozenset({"v1beta1"}), True)},
                         discovered={("flink.apache.org/v1beta1", "FlinkDeployment")})
    assert missing([req], ok) == []


def test_missing_objects_pools_and_default_class():
    reqs = requirements(DC, [NS, REDIS, LB])
    found = {(m.requirement.what, m.requirement.name) for m in missing(reqs, ClusterSnapshot())}
    assert found == {("default-storage-class", ""), ("address-pool", "fleet"), ("object", "store-keys")}
    snap = ClusterSnapshot(objects={("Secret", "ml", "store-keys"), ("IPAddressPool", "metallb-system", "fleet")},
                           default_storage_classes=["ceph-rwx"])
    assert missing(reqs, snap) == []
