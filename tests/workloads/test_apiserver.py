"""Every object of the rendered local and dev stacks accepted by a real kube-apiserver (server-side dry run,
strict field validation) with the upstream CRDs installed: this adds what the offline schema check cannot
see, above all the CRDs' CEL rules (`x-kubernetes-validations`) and defaulting.

Needs the Go-built local toolchain (scripts/toolchain.sh); outside CI the test is skipped when it is missing.
"""
from __future__ import annotations

import json
import os

import pytest

from tests.workloads.conftest import rendered
from tests.workloads.schemas import CRD_DIR

pytestmark = [pytest.mark.e2e]
IN_CI = os.environ.get("CI") == "true"


def _require_toolchain() -> None:
    from hybridml.local.toolchain import find_binaries, kwok_stage_files
    from infra.errors import ToolchainMissing

    try:
        find_binaries()
        kwok_stage_files()
    except ToolchainMissing as exc:
        if IN_CI:
            pytest.fail(f"CI=true but the local toolchain is missing: {exc}", pytrace=False)
        print(f"SKIP: local toolchain missing: {exc}")
        pytest.skip(f"local toolchain missing: {exc}")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    _require_toolchain()
    from hybridml.local import api_client, down, up
    from hybridml.local.sites import crd_patterns

    state = tmp_path_factory.mktemp("workloads-dryrun")
    node = {"name": "node-0", "labels": {"topology.kubernetes.io/zone": "z1"},
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110"}}
    try:
        # the CRDs a local control plane gets: shared/crds and the ones of more/ the stack writes (cert-manager's, ...)
        up([{"name": "dryrun", "nodes": [node]}], state_dir=state, crd_dir=CRD_DIR, crd_patterns=crd_patterns(CRD_DIR))
        client = api_client("dryrun", state)
        yield client
    finally:
        down(state)


class Discovery:
    def __init__(self, api):
        self.api = api
        self.cache: dict[str, dict[str, tuple[str, bool]]] = {}

    def path(self, manifest: dict) -> str:
        api_version, kind = manifest["apiVersion"], manifest["kind"]
        if api_version not in self.cache:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            res = self.api.get(base)["resources"]
            self.cache[api_version] = {r["kind"]: (r["name"], r["namespaced"]) for r in res if "/" not in r["name"]}
        plural, namespaced = self.cache[api_version][kind]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        ns = manifest["metadata"].get("namespace")
        return f"{base}/namespaces/{ns}/{plural}" if namespaced else f"{base}/{plural}"


@pytest.mark.parametrize("name", ["local", "dev"])
def test_apiserver_accepts_every_object(api, name):
    stack = rendered(name)
    namespaces = sorted({o.namespace for o in stack.objects if o.namespace})
    for ns in namespaces:
        if api.get_or_none(f"/api/v1/namespaces/{ns}") is None:
            api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    disco = Discovery(api)
    failures = []
    for o in stack.objects:
        status, body = api.request_raw("POST", disco.path(o.manifest), json.dumps(o.manifest).encode(),
                                       params={"dryRun": "All", "fieldValidation": "Strict"})
        if status == 409 and o.manifest["kind"] == "Namespace" and o.manifest["metadata"]["name"] in namespaces:
            continue   # created above so that the objects in it can be dry-run; the stack's own Namespace is the same
        if status not in (200, 201):
            try:
                msg = json.loads(body).get("message", "")
            except ValueError:
                msg = body.decode(errors="replace")
            failures.append(f"{o.ref()}: {status} {msg[:400]}")
    assert not failures, f"{len(failures)} objects rejected, e.g.\n" + "\n".join(failures[:20])


def test_apiserver_enforces_crd_cel_rules(api):
    """The dry run is a real gate: an AIServiceBackend pointing at a Service breaks a CEL rule of its CRD
    (the offline schema check accepts it)."""
    from tests.workloads import schemas

    bad = {"apiVersion": "aigateway.envoyproxy.io/v1beta1", "kind": "AIServiceBackend",
           "metadata": {"name": "bad", "namespace": "hybridml-gateway"},
           "spec": {"schema": {"name": "OpenAI"}, "backendRef": {"name": "svc", "kind": "Service", "port": 80}}}
    assert schemas.validate(bad) == []
    if api.get_or_none("/api/v1/namespaces/hybridml-gateway") is None:
        api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hybridml-gateway"}})
    status, body = api.request_raw("POST", Discovery(api).path(bad), json.dumps(bad).encode(),
                                   params={"dryRun": "All", "fieldValidation": "Strict"})
    assert status == 422, body[:300]
    assert b"Backend" in body
