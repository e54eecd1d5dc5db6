"""One version per operator (infra/versions.py): every apiVersion/kind the program writes is served by the
CRDs of the release pinned for it, the charts the program installs are those releases, and the gateway's
proxies run where the NetworkPolicies expect them."""
from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
import yaml

from infra.labels import GATEWAY_NAMESPACE
from infra.versions import OPERATORS, release_for_group
from tests.workloads.schemas import CRD_DIR
from workloads.images import Charts

CORE_GROUPS = {"", "apps", "batch", "policy", "rbac.authorization.k8s.io", "networking.k8s.io", "autoscaling",
               "scheduling.k8s.io", "storage.k8s.io", "coordination.k8s.io", "admissionregistration.k8s.io"}


@cache
def _served() -> dict[tuple[str, str], dict[str, set[str]]]:
    """(group, kind) -> CRD file -> versions served, over every CRD file in shared/crds (and more/)."""
    out: dict[tuple[str, str], dict[str, set[str]]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")) + sorted((CRD_DIR / "more").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            served = {v["name"] for v in spec["versions"] if v.get("served")}
            out.setdefault((spec["group"], spec["names"]["kind"]), {})[path.name] = served
    return out


def _readme_commits() -> dict[str, str]:
    rows = re.findall(r"^\| (\S+\.yaml) \| \S+ \| \S+ \| ([0-9a-f]{40}) \|$", (CRD_DIR / "README.md").read_text(), re.M)
    return {Path(f).name: commit for f, commit in rows}


def _written(stack) -> set[tuple[str, str]]:
    return {(o.api_version, o.kind) for o in stack.objects if o.api_version}


@pytest.mark.parametrize("name", ["local", "dev", "prod"])
def test_every_custom_kind_written_is_served_by_its_pinned_release(name, request):
    stack = request.getfixturevalue(f"{name}_stack")
    problems = []
    for api_version, kind in sorted(_written(stack)):
        group, _, version = api_version.rpartition("/")
        if group in CORE_GROUPS or group.endswith(".k8s.io") and group not in {"gateway.networking.k8s.io",
                                                                                 "inference.networking.k8s.io",
                                                                                 "leaderworkerset.x-k8s.io"}:
            continue
        release = release_for_group(group)
        if release is None:
            problems.append(f"{api_version} {kind}: no operator of infra/versions.py serves group {group}")
            continue
        files = {f: v for f, v in _served().get((group, kind), {}).items() if f.startswith(release.crd_files)}
        if not files:
            problems.append(f"{api_version} {kind}: {release.name}'s CRDs ({', '.join(release.crd_files)}*) have no {kind}")
        elif not any(version in v for v in files.values()):
            problems.append(f"{api_version} {kind}: {release.name} {release.version or '(prerequisite)'} serves only "
                            f"{sorted(set().union(*files.values()))}")
    assert problems == [], "\n".join(problems)


def test_the_crds_kept_are_those_of_the_pinned_release():
    """Where a row names the upstream commit of its CRDs, shared/crds/README.md lists that commit for every
    file of the release: a pin moved without its CRDs (or the reverse) fails here."""
    commits = _readme_commits()
    assert commits, "shared/crds/README.md lists no files"
    for release in OPERATORS.values():
        for prefix in release.crd_files:
            files = {f: c for f, c in commits.items() if f.startswith(prefix)}
            assert files, f"{release.name}: no CRD files {prefix}* in shared/crds"
            if release.crd_commit is not None:
                assert set(files.values()) == {release.crd_commit}, (release.name, files)
        if release.installed_by_program:
            assert release.version and release.chart and release.namespace, release.name
        else:
            assert release.note.startswith("prerequisite") or release.groups, release.name


def test_the_program_installs_the_pinned_charts(dev_stack):
    releases = {props.get("name"): props for t, _, props in dev_stack.other if t == "kubernetes:helm.sh/v3:Release"}
    charts = Charts()
    for role, chart in (("envoy-gateway", charts.envoy_gateway), ("ai-gateway-crds", charts.ai_gateway_crds),
                        ("ai-gateway", charts.ai_gateway)):
        assert role in releases, sorted(releases)
        assert releases[role]["version"] == OPERATORS[role].version == chart.version
        assert releases[role]["chart"] == OPERATORS[role].chart
    # the AI gateway release serves the v1beta1 kinds the program writes (v0.5 served only v1alpha1)
    assert OPERATORS["ai-gateway"].version == OPERATORS["ai-gateway-crds"].version


def test_proxies_run_where_the_network_policies_admit_them(dev_stack):
    """Envoy Gateway runs in gateway-namespace mode, so its proxies are in the Gateways' namespace; the
    model namespaces admit serving traffic from that namespace."""
    release = next(props for t, _, props in dev_stack.other
                   if t == "kubernetes:helm.sh/v3:Release" and props.get("name") == "envoy-gateway")
    provider = release["values"]["config"]["envoyGateway"]["provider"]
    assert provider["kubernetes"]["deploy"]["type"] == "GatewayNamespace"
    gateway_namespaces = {o.namespace for o in dev_stack.k8s("Gateway")}
    assert gateway_namespaces == {GATEWAY_NAMESPACE}
    admitted = set()
    for np in dev_stack.k8s("NetworkPolicy"):
        if not (np.namespace or "").startswith("ml-") or np.obj_name != "allow-gateway-to-model-servers":
            continue
        for rule in np.manifest["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                for expr in (peer.get("namespaceSelector") or {}).get("matchExpressions") or []:
                    admitted |= set(expr.get("values") or [])
    assert GATEWAY_NAMESPACE in admitted and OPERATORS["envoy-gateway"].namespace not in admitted
