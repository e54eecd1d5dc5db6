"""Every controller of a kind the workloads write, installed on each cloud cluster the program creates (clusters/
operators.py), pinned from infra/versions.py, ordered before the custom resources of its kinds."""
from __future__ import annotations

import json

import pytest

from clusters import iam
from clusters.operator_values import install_plan, prometheus_stack_values
from infra.labels import MONITORING_NAMESPACE, NODE_ROLE
from infra.loader import load_environment
from infra.versions import OPERATORS
from tests.pulumi_mocks import of_type, preview, where

OPERATOR_RELEASES = [s.name for s in install_plan("gp3-encrypted")]


@pytest.fixture(scope="module")
def dev():
    return preview("dev")


def _installs(result, site: str) -> dict:
    """Release name -> recorded resource, Helm releases and the manifest-installed operator alike."""
    out = {r.props["name"]: r for r in of_type(result, "kubernetes:helm.sh/v3:Release", site)}
    for r in of_type(result, "kubernetes:yaml/v2:ConfigFile", site):
        out[r.name.rsplit("-operators-", 1)[-1]] = r
    return out


def _ancestors(result, urn: str) -> set[str]:
    """Every URN `urn` waits for, directly or through what it waits for."""
    by_urn = {r.urn: r for r in result.resources}
    seen, todo = set(), [urn]
    while todo:
        for dep in by_urn[todo.pop()].dependencies:
            if dep not in seen and dep in by_urn:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_every_cloud_site_installs_each_operator_at_its_pinned_release(dev):
    env = load_environment("dev")
    for site in env.cloud_sites:
        installs = _installs(dev, site.name)
        assert set(OPERATOR_RELEASES) <= set(installs), (site.name, set(OPERATOR_RELEASES) - set(installs))
        for name in OPERATOR_RELEASES:
            row, r = OPERATORS[name], installs[name]
            assert row.installed_by_program and row.version, name
            if row.manifest:
                assert r.props["file"] == row.manifest and row.version in row.manifest, where(r)
                continue
            assert r.props["version"] == row.version and r.props["namespace"] == row.namespace, where(r)
            chart = r.props["chart"] if r.props["chart"].startswith("oci://") else \
                f"{r.props['repositoryOpts']['repo']}/{r.props['chart']}"
            assert chart == row.chart, where(r)
            assert r.props["atomic"] is True, where(r)      # Helm waits for pods and webhooks, rolls back on failure


def test_releases_follow_what_they_need_and_the_workloads_follow_them(dev):
    installs = _installs(dev, "aws-use1")
    need = {"kserve": {"kserve-crd", "cert-manager"}, "flink-kubernetes-operator": {"cert-manager"},
            "prometheus-operator": {"cert-manager"}}
    for name, before in need.items():
        ancestors = _ancestors(dev, installs[name].urn)
        for b in before:
            assert installs[b].urn in ancestors, f"{name} does not wait for {b}"
    (lb_identity,) = [r for r in of_type(dev, "aws:eks/podIdentityAssociation:PodIdentityAssociation", "aws-use1")
                      if r.props["serviceAccount"] == "aws-load-balancer-controller"]
    assert lb_identity.urn in _ancestors(dev, installs["aws-load-balancer-controller"].urn)
    # every custom resource of an operator's kinds waits for that operator (through the cluster's readiness gate)
    checked = set()
    for r in dev.resources:
        kind_group = r.type.split(":")[1].split("/")[0] if r.type.startswith("kubernetes:") else ""
        owner = next((n for n in OPERATOR_RELEASES if kind_group in OPERATORS[n].groups), None)
        if owner is None or dev.cluster_of(r) != "aws-use1" or r.type.endswith("Release"):
            continue
        assert installs[owner].urn in _ancestors(dev, r.urn), f"{where(r)} does not wait for {owner}"
        checked.add(owner)
    assert checked >= {"keda", "kserve", "prometheus-operator", "cert-manager"}, checked


def test_the_workloads_do_not_install_cert_manager_again_where_the_cluster_did(dev):
    releases = [r for r in of_type(dev, "kubernetes:helm.sh/v3:Release") if r.props["name"] == "cert-manager"]
    by_site = {dev.cluster_of(r) for r in releases}
    assert len(releases) == len(by_site), [where(r) for r in releases]      # one per cluster
    namespaces = [r for r in dev.resources if r.type == "kubernetes:core/v1:Namespace" and dev.cluster_of(r) == "aws-use1"
                  and r.props["metadata"]["name"] == "cert-manager"]
    assert len(namespaces) == 1, [where(r) for r in namespaces]


def test_kserve_runs_standard_deployments_and_no_ingress(dev):
    values = _installs(dev, "aws-use1")["kserve"].props["values"]["kserve"]["controller"]
    assert values["deploymentMode"] == "Standard" and values["gateway"]["disableIngressCreation"] is True


def test_prometheus_selects_every_monitor_and_rule_and_serves_keda(dev):
    r = _installs(dev, "aws-use1")["prometheus-operator"]
    spec = r.props["values"]["prometheus"]["prometheusSpec"]
    for kind in ("serviceMonitor", "podMonitor", "rule"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False
        assert spec[f"{kind}Selector"] == {"matchLabels": {}} and spec[f"{kind}NamespaceSelector"] == {"matchLabels": {}}
    # KEDA's triggers query prometheus-operated in the monitoring namespace: the operator's Service of this Prometheus
    assert r.props["namespace"] == MONITORING_NAMESPACE
    queries = [t["metadata"]["serverAddress"] for o in dev.kubernetes_manifests()["aws-use1"]
               if o["kind"] == "ScaledObject" for t in o["spec"]["triggers"] if t["type"] == "prometheus"]
    assert queries and all(q.startswith(f"http://prometheus-operated.{MONITORING_NAMESPACE}.") for q in queries)
    assert prometheus_stack_values("x")["nodeExporter"]["enabled"] is False   # hostNetwork/hostPID: not `restricted`


def test_every_operator_runs_on_the_system_nodes(dev):
    def selectors(values):
        if isinstance(values, dict):
            for k, v in values.items():
                if k == "nodeSelector":
                    yield v
                else:
                    yield from selectors(v)
        elif isinstance(values, list):
            for v in values:
                yield from selectors(v)

    for name, r in _installs(dev, "aws-use1").items():
        if name not in OPERATOR_RELEASES or OPERATORS[name].manifest or name == "kserve-crd":
            continue
        found = list(selectors(r.props["values"]))
        assert found and all(s == {NODE_ROLE: "system"} for s in found), (name, found)


def test_the_load_balancer_controller_may_change_only_its_clusters_load_balancers(dev):
    (policy,) = [r for r in of_type(dev, "aws:iam/rolePolicy:RolePolicy", "aws-use1") if "lb-controller" in r.name]
    doc = json.loads(policy.props["policy"])
    assert doc == iam.load_balancer_controller_policy(cluster_name="dev-aws-use1")
    for st in doc["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all(a != "*" and not a.endswith(":*") for a in actions), st
        changes = [a for a in actions if not (":Describe" in a or ":Get" in a)]
        mutating_elb = [a for a in changes if a.startswith("elasticloadbalancing:") and "Listener" not in a]
        if mutating_elb:
            cond = json.dumps(st.get("Condition") or {})
            assert "dev-aws-use1" in cond, st    # create with the cluster's tag, change only what carries it
    assert not any("waf" in a or "shield" in a for st in doc["Statement"]
                   for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]]))


FREE_FORM = {"nodeSelector", "resources", "securityContext", "podSecurityContext", "containerSecurityContext",
             "annotations", "labels", "tolerations", "affinity"}


def _unknown_keys(ours: dict, chart: dict, at: str = "") -> list[str]:
    """Keys of our values that the chart's values.yaml does not declare (a typo Helm would silently ignore)."""
    out = []
    for key, value in ours.items():
        if key not in chart:
            out.append(f"{at}{key}")
        elif isinstance(value, dict) and isinstance(chart[key], dict) and chart[key] and key not in FREE_FORM:
            out += _unknown_keys(value, chart[key], f"{at}{key}.")
    return out


@pytest.mark.parametrize("operator,chart_dir", [("kserve", "charts/kserve-resources"), ("lws", "charts/lws")])
def test_values_name_only_keys_the_pinned_chart_declares(operator, chart_dir):
    """Where the chart's source is in the release's Go module (fetched by tests/workloads/test_versions.py), every
    key the program sets exists in that chart's values.yaml."""
    import yaml

    from tests.conftest import require
    from tests.workloads.test_versions import _module_dir

    row = OPERATORS[operator]
    module = (row.crd_source or "").split("@")[0] + "@" + (row.crd_source or "").split("@")[1].split("/")[0]
    folder = _module_dir(f"{module}/{chart_dir}")
    require(folder is not None, f"{module} is not in the Go module cache and `go` cannot fetch it")
    assert folder is not None
    chart = yaml.safe_load((folder / "values.yaml").read_text())
    ours = next(s.values for s in install_plan("gp3-encrypted") if s.name == operator) or {}
    assert _unknown_keys(ours, chart) == []
