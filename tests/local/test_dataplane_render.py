"""The local data path's pure parts (no Envoy Gateway binary needed): what standalone mode gets from the rendered
objects, how the controller's logged statuses are judged, and the simulated model server's protocol.
The real controller and Envoy run in tests/e2e/test_dataplane.py."""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from hybridml.local.dataplane import controller, model_sim, render
from hybridml.local.processes import free_ports
from hybridml.local.toolchain import cache_dir
from hybridml.ops.preview import run_preview
from infra.errors import InvalidValue
from infra.loader import load_environment, resolve_spec_path
from infra.versions import OPERATORS
from tests.conftest import REPO, require

FIXTURE = REPO / "tests" / "e2e" / "fixtures" / "dataplane.yaml"


def _standalone(spec: str, *, redact: bool = False) -> tuple[dict[str, list[dict]], render.Standalone, dict, dict]:
    env = load_environment(spec)
    manifests = run_preview(spec, mode="local").kubernetes_manifests(redact=redact)
    sites = {s: render.gateway_objects(m) for s, m in manifests.items() if s in {x.name for x in env.sites}}
    ports = {s: {p: 20000 + 100 * i + j for j, (_, p) in enumerate(render.listener_ports(d))}
             for i, (s, d) in enumerate(sorted(sites.items()))}
    server_ports = {(s, srv.pipeline, v): 30000 + k for k, (s, srv, v) in enumerate(
        (s, srv, v) for s, d in sorted(sites.items()) for srv in render.simulated_servers(env, s, d) for v in srv.backends)}
    return sites, render.standalone(env, sites, ports=ports, server_ports=server_ports, envoy_version="1.40.0"), \
        ports, server_ports


@pytest.mark.parametrize("spec", [str(REPO / "infra" / "environments" / "local.yaml"), str(FIXTURE)])
def test_standalone_keeps_the_rendered_objects_and_rewrites_only_what_a_host_needs(spec: str) -> None:
    rendered, out, ports, server_ports = _standalone(spec)
    docs = [(f, d) for f, ds in out.files.items() for d in ds]
    assert sum(1 for _, d in docs if d["kind"] == "GatewayClass") == 1
    for f, d in docs:
        if d["kind"] == "EnvoyProxy":
            assert out.files[f] == [d], "Envoy Gateway v1.9.1's file loader keeps one EnvoyProxy per file"
            assert d["spec"]["provider"] == {"type": "Host", "host": {"envoyVersion": "1.40.0"}}
            assert "--use-dynamic-base-id" in d["spec"]["extraArgs"]
    for site, objs in rendered.items():
        ns = out.sites[site].namespace
        assert ns == f"hybridml-gateway-{site}"
        mine = {(d["kind"], d["metadata"]["name"]): d for _, d in docs if d["metadata"].get("namespace") == ns}
        for d in objs:
            key = (d["kind"], d["metadata"]["name"])
            if d["apiVersion"].startswith(render.AI_GROUP) or key not in mine:
                assert any(s.site == site and (s.kind, s.name) == key for s in out.skipped) or d["kind"] == "GatewayClass"
                continue
            if d["kind"] in ("HTTPRoute", "ClientTrafficPolicy", "BackendTrafficPolicy"):
                assert mine[key]["spec"] == render.plain(d["spec"]), key      # routes and policies as rendered
        for d in mine.values():
            if d["kind"] == "Gateway":
                assert {lst["port"] for lst in d["spec"]["listeners"]} <= set(ports[site].values())
            if d["kind"] == "Backend":
                for ep in d["spec"]["endpoints"]:
                    assert ep["ip"]["address"] == "127.0.0.1", d                  # every Backend of a served route
                if "tls" in d["spec"]:
                    other = d["spec"]["tls"]["sni"].split(".fleet.")[0]
                    assert d["spec"]["endpoints"][0]["ip"]["port"] in ports[other].values()
        patches = [d for d in mine.values() if d["kind"] == "EnvoyPatchPolicy"]
        assert {p["spec"]["targetRef"]["name"] for p in patches} == {d["metadata"]["name"] for d in objs if d["kind"] == "Gateway"}
        keys = [d for d in objs if d["kind"] == "Secret"]                      # the tenants' API keys, as rendered
        assert [d["metadata"]["name"] for d in keys] == (["tenant-api-keys"] if any(
            d["kind"] == "SecurityPolicy" for d in objs) else [])
        for d in keys:
            stored = mine[("Secret", d["metadata"]["name"])]
            assert "stringData" not in stored and {k: base64.b64decode(v).decode() for k, v in stored["data"].items()} \
                == d["stringData"] and set(d["stringData"]) == {t.name for t in load_environment(spec).tenants}
        fleet = x509.load_pem_x509_certificate(base64.b64decode(mine[("Secret", "fleet-tls")]["data"]["tls.crt"]))
        sans = fleet.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert sans == [out.sites[site].fleet_host]
    for srv in out.servers:
        assert all((srv.site, srv.pipeline, v) in server_ports for v in srv.backends)


def test_a_redacted_render_is_refused_rather_than_served_with_placeholder_keys() -> None:
    with pytest.raises(InvalidValue, match="tenant-api-keys is redacted"):
        _standalone(str(FIXTURE), redact=True)                                  # what `hybridml preview` prints


def test_llm_objects_are_skipped_with_the_reason() -> None:
    _, out, _, _ = _standalone(str(REPO / "infra" / "environments" / "local.yaml"))
    kinds = {s.kind for s in out.skipped}
    assert {"AIGatewayRoute", "AIServiceBackend", "QuotaPolicy", "BackendSecurityPolicy", "BackendTrafficPolicy"} <= kinds
    assert all("AI Gateway" in s.reason for s in out.skipped)


LOG = """\
2026-12-06T18:36:49.248Z\tinfo\tprovider\tfile/status.go:87\tGot new status for Gateway
conditions:
- message: The Gateway has been scheduled by Envoy Gateway
  reason: Accepted
  status: "True"
  type: Accepted
- message: No addresses have been assigned to the Gateway
  reason: AddressNotAssigned
  status: "False"
  type: Programmed
listeners:
- attachedRoutes: 1
  conditions:
  - {message: ok, reason: Programmed, status: "True", type: Programmed}
  - message: The certificate SAN a overlaps with the certificate SAN a in listener b.
    reason: OverlappingCertificates
    status: "True"
    type: OverlappingTLSConfig
  name: us-east
\t{"runner": "provider", "key": "ns-a/public"}
2026-12-06T18:36:49.355Z\tinfo\tprovider\tfile/status.go:87\tGot new status for HTTPRoute
parents:
- conditions:
  - {message: Route is accepted, reason: Accepted, status: "True", type: Accepted}
  - message: 'Failed to process route rule 0 backendRef 0: Backend ns-a/ghost
      not found.'
    reason: BackendNotFound
    status: "False"
    type: ResolvedRefs
  parentRef: {name: public, sectionName: us-east}
\t{"runner": "provider", "key": "ns-a/broken"}
2026-12-06T18:36:49.355Z\tinfo\tprovider\tfile/status.go:87\tGot new status for Unknown
ancestors:
- ancestorRef: {kind: Gateway, name: public}
  conditions:
  - {message: EnvoyProxy has been accepted., reason: Accepted, status: "True", type: Accepted}
\t{"runner": "provider", "key": "ns-a/public-proxy"}
2026-12-06T18:43:40.420Z\terror\tprovider\tfile/file.go:106\tfailed to reload resources initially\t{"error": "x: local validation error: bad"}
"""


def test_statuses_are_read_from_the_file_providers_log() -> None:
    written = [{"kind": k, "metadata": {"namespace": "ns-a", "name": n}} for k, n in
               [("Gateway", "public"), ("HTTPRoute", "broken"), ("EnvoyProxy", "public-proxy"), ("HTTPRoute", "silent"),
                ("Secret", "public-tls")]]
    statuses, errors = controller.object_statuses(written, LOG)
    by = {o.key: o for o in statuses}
    assert set(by) == {"ns-a/public", "ns-a/broken", "ns-a/public-proxy", "ns-a/silent"}   # Secrets have no status
    assert by["ns-a/public"].ok and by["ns-a/public"].warnings == ["OverlappingTLSConfig (OverlappingCertificates)"]
    assert by["ns-a/public-proxy"].ok                                     # logged as kind "Unknown"
    assert by["ns-a/broken"].problems == [
        "parent public/us-east: ResolvedRefs=False BackendNotFound: Failed to process route rule 0 backendRef 0: "
        "Backend ns-a/ghost not found."]
    assert by["ns-a/silent"].status is None and not by["ns-a/silent"].ok
    assert len(errors) == 1 and "local validation error" in errors[0]


def test_the_simulated_server_speaks_kserve_v2_and_plain_http() -> None:
    who = model_sim.Identity("dc-a", "ranker", "triton", "")
    stats = model_sim.Stats()
    assert model_sim.answer(who, "GET", "/v2/health/ready", b"", stats) == (200, {"ready": True})
    status, meta = model_sim.answer(who, "GET", "/v2/models/ranker", b"", stats)
    assert status == 200 and meta["name"] == "ranker" and meta["outputs"][0]["name"] == "score"
    status, body = model_sim.answer(who, "POST", "/v2/models/ranker/infer", b'{"id": "7", "inputs": []}', stats)
    assert status == 200 and body["id"] == "7" and body["outputs"][0]["datatype"] == "FP32"
    assert body["parameters"]["site"] == "dc-a"
    assert model_sim.answer(who, "POST", "/v2/models/other/infer", b"{}", stats)[0] == 404
    assert model_sim.answer(who, "POST", "/v2/models/ranker/infer", b"not json", stats)[0] == 400
    cpu = model_sim.Identity("dc-a", "recs", "cpu", "treatment")
    assert model_sim.answer(cpu, "POST", "/rank?x=1", b"", stats)[1]["path"] == "/rank"


def test_the_simulated_server_answers_over_loopback_keep_alive(tmp_path: Path) -> None:
    port = free_ports(1, set())[0]
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete,
                              args=(model_sim.serve("dc-a", "recs", "cpu", {"control": port}, stop),), daemon=True)
    thread.start()
    conn = None
    try:
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.connect()
                break
            except OSError:
                threading.Event().wait(0.05)
        assert conn is not None
        for i in range(3):   # one connection, several requests (keep-alive), a chunked body among them
            if i == 2:
                conn.putrequest("POST", "/predict")
                conn.putheader("transfer-encoding", "chunked")
                conn.endheaders()
                conn.send(b"2\r\n{}\r\n0\r\n\r\n")
            else:
                conn.request("POST", "/predict", body=b"{}")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader(model_sim.HEADER) == "dc-a/recs/control"
            assert json.loads(resp.read())["variant"] == "control"
        conn.request("GET", "/_sim/stats")
        assert json.loads(conn.getresponse().read())["requests"] == {"control": 3}
    finally:
        if conn is not None:
            conn.close()
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


def test_the_controller_config_keeps_admin_on_loopback(tmp_path: Path) -> None:
    cfg = controller.config(tmp_path / "res", controller.HostDirs(tmp_path / "host"), 19999)
    assert cfg["admin"]["address"] == {"host": "127.0.0.1", "port": 19999}
    assert cfg["provider"]["custom"]["infrastructure"]["host"]["dataHome"] == str(tmp_path / "host" / "data")
    assert yaml.safe_load(yaml.safe_dump(cfg)) == cfg


def _crd_schemas(root: Path) -> dict[tuple[str, str], dict]:
    schemas = {}
    crds = root / "charts" / "gateway-crds-helm" / "templates"
    for f in [*sorted((crds / "generated").glob("*.yaml")), crds / "experimental-gatewayapi-crds.yaml"]:
        text = re.sub(r"{{[^}]*}}", "", f.read_text())           # Helm template lines (labels) aside
        for d in yaml.safe_load_all(text):
            if d and d.get("kind") == "CustomResourceDefinition":
                for v in d["spec"]["versions"]:
                    schemas[(f"{d['spec']['group']}/{v['name']}", d["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    return schemas


def _unknown(obj: object, schema: dict | None, path: str) -> list[str]:
    """Fields of `obj` that `schema` does not declare (an API server would prune them silently)."""
    if not schema or schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, dict):
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties")
            return [u for k, v in obj.items() for u in _unknown(v, extra, f"{path}.{k}")] if isinstance(extra, dict) else []
        return [u for k, v in obj.items() for u in ([f"{path}.{k}"] if k not in props else _unknown(v, props[k], f"{path}.{k}"))]
    if isinstance(obj, list):
        return [u for i, v in enumerate(obj) for u in _unknown(v, schema.get("items"), f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("spec", ["local", "dev", str(FIXTURE)])
def test_no_gateway_field_the_program_writes_is_unknown_to_envoy_gateway_v191(spec: str) -> None:
    """shared/crds holds a later Envoy Gateway commit; the controller the local data path runs (and the chart the program
    installs) is v1.9.1: its own CRDs (in the Go module scripts/toolchain.sh builds it from) know every field we write."""
    version = OPERATORS["envoy-gateway"].version
    root = cache_dir() / "go" / "mod" / "github.com" / "envoyproxy" / f"gateway@{version}"
    require(root.is_dir(), f"the Envoy Gateway {version} module is not in the Go module cache (scripts/toolchain.sh envoy-gateway)")
    schemas = _crd_schemas(root)
    checked, unknown = 0, []
    for site, docs in run_preview(str(resolve_spec_path(spec)), mode="local").kubernetes_manifests().items():
        for d in docs:
            schema = schemas.get((d.get("apiVersion", ""), d.get("kind", "")))
            if schema is not None:
                checked += 1
                unknown += [f"{site} {d['kind']} {d['metadata']['name']}: {u}" for u in
                            _unknown({k: v for k, v in d.items() if k not in ("apiVersion", "kind", "metadata")}, schema, "")]
    assert checked > 20 and unknown == []
