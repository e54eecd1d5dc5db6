"""Karpenter NodePool / EC2NodeClass manifests against the upstream CRD schemas (shared/crds).

jsonschema checks the openAPIV3Schema (types, enums, patterns, required); the CEL rules
(x-kubernetes-validations) that matter for what we emit are checked by hand below.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from clusters import karpenter, sizing
from infra.loader import load_environment
from policies.placement import solve
from tests.conftest import REPO

CRDS = next((p for p in (REPO.parent / "shared" / "crds", REPO / "shared" / "crds", Path("/work/shared/crds"))
             if p.is_dir()), None)


def _schema(file: str) -> dict:
    if CRDS is None:
        pytest.skip("shared/crds not found next to the repository")
    crd = yaml.safe_load((CRDS / file).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def _strip_k8s_extensions(schema):
    """OpenAPI v3 -> JSON Schema: int-or-string and preserve-unknown fields need no extra keywords."""
    if isinstance(schema, dict):
        return {k: _strip_k8s_extensions(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(schema, list):
        return [_strip_k8s_extensions(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def pools():
    out = []
    for name in ("dev", "prod"):
        env = load_environment(name)
        plan = solve(env)
        for site in env.cloud_sites:
            if site.name in plan.used_sites():
                out += [(site, p) for p in sizing.node_pools(env, site, plan.site(site.name))]
    assert out
    return out


def _obj(api_version, kind, name, spec):
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_node_pools_validate_against_the_crd(pools):
    validator = Draft202012Validator(_strip_k8s_extensions(_schema("karpenter.nodepools.yaml")))
    for site, pool in pools:
        obj = _obj("karpenter.sh/v1", "NodePool", pool.name, karpenter.node_pool(pool))
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, f"{site.name}/{pool.name}: {errors}"


def test_ec2_node_classes_validate_against_the_crd(pools):
    validator = Draft202012Validator(_strip_k8s_extensions(_schema("karpenter.ec2nodeclasses.yaml")))
    for site, pool in pools:
        spec = karpenter.ec2_node_class(pool, cluster_name=f"prod-{site.name}", node_role="node-role",
                                        tags={"hybridml.io/site": site.name})
        obj = _obj("karpenter.k8s.aws/v1", "EC2NodeClass", pool.name, spec)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
        assert not errors, f"{site.name}/{pool.name}: {errors}"


def test_cel_rules_that_apply_to_what_we_emit(pools):
    for _site, pool in pools:
        np = karpenter.node_pool(pool)
        keys = list(np["template"]["metadata"]["labels"]) + [r["key"] for r in np["template"]["spec"]["requirements"]]
        for key in keys:
            domain = key.split("/")[0] if "/" in key else ""
            assert not domain.endswith("karpenter.sh") or key in ("karpenter.sh/capacity-type",), key
            assert key != "kubernetes.io/hostname"
            assert not domain.endswith("karpenter.k8s.aws"), key
        nc = karpenter.ec2_node_class(pool, cluster_name="c", node_role="r", tags={"a": "b"})
        assert ("role" in nc) != ("instanceProfile" in nc)
        alias = nc["amiSelectorTerms"][0]["alias"]
        assert re.match(r"^[a-zA-Z0-9]+@.+$", alias) and alias.split("@")[0] == "al2023" and len(alias) <= 30
        assert "amiFamily" not in nc   # an alias implies the family
        assert not any(k.startswith("kubernetes.io/cluster") or k == "eks:eks-cluster-name" for k in nc["tags"])


def test_node_class_security_settings(pools):
    for _, pool in pools:
        nc = karpenter.ec2_node_class(pool, cluster_name="c", node_role="r", tags={})
        assert nc["metadataOptions"]["httpTokens"] == "required"
        assert nc["metadataOptions"]["httpPutResponseHopLimit"] == 1
        assert nc["associatePublicIPAddress"] is False
        assert all(b["ebs"]["encrypted"] is True for b in nc["blockDeviceMappings"])
        assert nc["subnetSelectorTerms"] == [{"tags": {karpenter.DISCOVERY_TAG: "c",
                                                       "hybridml.io/subnet-role": "private"}}]


def test_gpu_pools_are_tainted_and_limited_from_the_plan(pools):
    for _, pool in pools:
        np = karpenter.node_pool(pool)
        taints = np["template"]["spec"]["taints"]
        if pool.gpu_type:
            assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in taints
            assert np["limits"]["nvidia.com/gpu"] == str(pool.limit_gpus)
            assert np["disruption"]["consolidationPolicy"] == "WhenEmpty"
        assert np["limits"]["cpu"] == str(pool.limit_cpu)
        reqs = {r["key"]: r["values"] for r in np["template"]["spec"]["requirements"]}
        assert reqs["node.kubernetes.io/instance-type"] == list(pool.instance_types)
        assert reqs["karpenter.sh/capacity-type"] == list(pool.capacity_types)
