"""The data-path rules (policies/rules/datapaths.py) on rendered objects, on the CrossGuard fixture's variants
(offline), and through `hybridml check` on deliberately broken variants (exit 1, naming rule, resource and fix).

- flink-state-in-site: the Flink state of a pii view stays on a PVC or in its datacenter's declared object store;
- data-path-tls: every data store serves TLS only, with a certificate of the fleet issuer naming its fleet host;
- data-path-narrow: a store's load balancer and NetworkPolicy admit only the networks of the sites reading it.
Overlapping site networks are bad input, not a policy violation: tests/infra/test_site_networks.py (exit 2).
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json

import pytest
import yaml
from typer.testing import CliRunner

from hybridml.cli import app
from infra.bounds import site_networks
from infra.loader import load_environment
from infra.objectstore import ObjectStore
from policies.facts import context_for
from policies.placement import solve
from policies.rules import ALL_RULES, RULES_BY_NAME, ResourceView, evaluate
from tests.conftest import REPO
from workloads.render import feature_store, flink, network, qdrant
from workloads.render import redis_sentinel as rs
from workloads.render.certificates import FLEET_ISSUER
from workloads.render.context import SiteContext

ENV = load_environment("local")
PLAN = solve(ENV)
CTX = context_for(ENV, PLAN)
DC = SiteContext(env_name="local", site="dc-local", site_kind="datacenter", domain="local.hybridml.example",
                 privacy_zones=("internal", "pii"))
STORE = ObjectStore(endpoint="https://s3.dc-local.example.internal:9000", bucket="local-flink-state")
RULES = ("flink-state-in-site", "data-path-tls", "data-path-narrow")


def views(objs: list[dict], cluster: str = "dc-local") -> list[ResourceView]:
    def token(o: dict) -> str:
        group, _, version = o["apiVersion"].rpartition("/")
        return f"kubernetes:{group + '/' if group else 'core/'}{version}:{o['kind']}"
    return [ResourceView(token(o), o["metadata"]["name"], o, cluster=cluster) for o in objs]


def findings(objs: list[dict], ctx=CTX, cluster: str = "dc-local", rules=RULES) -> list[tuple[str, str, str]]:
    return [(f.rule, f.resource, f.message) for f in evaluate([RULES_BY_NAME[r] for r in rules], views(objs, cluster), ctx)]


def view(name: str, **update):
    return next(v for v in ENV.feature_views if v.name == name).model_copy(update=update)


def with_store(store: ObjectStore | None):
    sites = [s.model_copy(update={"object_store": store}) if s.name == "dc-local" else s for s in ENV.sites]
    return ENV.model_copy(update={"sites": sites})


# --------------------------------------------------------------------------- flink-state-in-site


def test_a_pii_views_state_goes_to_a_volume_beside_the_job():
    objs = feature_store.flink_objects(DC, view("user-profile", streaming=True), "ml-pii")
    job = next(o for o in objs if o["kind"] == "FlinkDeployment")
    claim = next(o for o in objs if o["kind"] == "PersistentVolumeClaim")
    conf = job["spec"]["flinkConfiguration"]
    assert {conf[k] for k in flink.STATE_DIR_KEYS} == {f"file:///flink-state/local/dc-local/user-profile/{d}"
                                                       for d in ("checkpoints", "savepoints", "ha")}
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]     # the JobManager and every TaskManager write it
    volumes = job["spec"]["podTemplate"]["spec"]["volumes"]
    assert {"name": "state", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in volumes
    assert findings(objs) == []


def test_a_pii_views_state_goes_to_its_datacenters_own_store_when_declared():
    ctx = dataclasses.replace(DC, object_store=STORE)
    objs = feature_store.flink_objects(ctx, view("user-profile", streaming=True), "ml-pii")
    conf = next(o for o in objs if o["kind"] == "FlinkDeployment")["spec"]["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"] == "s3://local-flink-state/local/dc-local/user-profile/checkpoints"
    assert conf["s3.endpoint"] == STORE.endpoint and not any(o["kind"] == "PersistentVolumeClaim" for o in objs)
    declared = context_for(with_store(STORE), PLAN)
    assert findings(objs, declared) == []
    # the same URIs judged against a spec that declares no store (or another endpoint) leave the site
    assert {r for r, _, _ in findings(objs, CTX)} == {"flink-state-in-site"}
    other = context_for(with_store(STORE.model_copy(update={"endpoint": "https://s3.elsewhere.example"})), PLAN)
    assert any("leaves site dc-local" in m for _, _, m in findings(objs, other))


def test_public_and_internal_views_keep_the_fleet_bucket():
    objs = feature_store.flink_objects(DC, view("item-stats"), "ml-internal")
    conf = next(o for o in objs if o["kind"] == "FlinkDeployment")["spec"]["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"].startswith("s3://hybridml-flink-state/")
    assert findings(objs) == []


@pytest.mark.parametrize("breakage,message", [
    (lambda c, v: c.update({"execution.checkpointing.dir": "s3://hybridml-flink-state/x"}), "leaves site dc-local"),
    (lambda c, v: c.update({"high-availability.storageDir": "file:///tmp/ha"}), "not on a PersistentVolumeClaim"),
    (lambda c, v: c.pop("execution.checkpointing.savepoint-dir"), "is not set"),
    (lambda c, v: v.clear(), "not on a PersistentVolumeClaim"),    # the state dirs without their volume
])
def test_pii_state_outside_the_site_is_flagged(breakage, message):
    objs = copy.deepcopy(feature_store.flink_objects(DC, view("user-profile", streaming=True), "ml-pii"))
    job = next(o for o in objs if o["kind"] == "FlinkDeployment")
    breakage(job["spec"]["flinkConfiguration"], job["spec"]["podTemplate"]["spec"]["volumes"])
    found = findings(objs, rules=("flink-state-in-site",))
    assert found and all(r == "flink-state-in-site" and res == "FlinkDeployment ml-pii/ingest-user-profile"
                         for r, res, _ in found)
    assert any(message in m for _, _, m in found), found


# --------------------------------------------------------------------------- data-path-tls


def redis(fleet_sources: tuple[str, ...] = ("10.0.0.0/16",)) -> list[dict]:
    return copy.deepcopy(feature_store.redis_objects(DC, view("user-profile"), "ml-pii", fleet_sources=list(fleet_sources)))


def test_rendered_data_stores_serve_tls_with_fleet_certificates():
    assert findings(redis(), rules=("data-path-tls",)) == []
    cert = next(o for o in redis() if o["kind"] == "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": FLEET_ISSUER, "kind": "ClusterIssuer", "group": "cert-manager.io"}
    lb = next(o for o in redis() if o["spec"].get("type") == "LoadBalancer")
    assert lb["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"] in cert["spec"]["dnsNames"]
    col = next(c for c in ENV.collections if c.name == "help-docs")
    assert findings(qdrant.objects(DC, col, "ml-internal", fleet_sources=["10.0.0.0/16"]), rules=("data-path-tls",)) == []
    fs = [feature_store.feast_object(DC, view("user-profile"), "ml-pii"), feature_store.feast_certificate(DC, view("user-profile"), "ml-pii")]
    assert findings(fs, rules=("data-path-tls",)) == []


def _strip_tls(objs: list[dict]) -> list[dict]:
    for o in objs:
        for c in ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", []):
            c["args"] = [a.replace(" ".join(rs.tls_args(rs.REDIS_PORT)), "--port 6379")
                         .replace(" ".join(rs.tls_args(rs.SENTINEL_PORT)), "--port 26379") for a in c.get("args") or []]
    return objs


def test_redis_without_tls_is_flagged():
    found = findings(_strip_tls(redis()), rules=("data-path-tls",))
    assert {res for _, res, _ in found} == {"StatefulSet ml-pii/redis-user-profile", "Deployment ml-pii/redis-user-profile-arbiter",
                                            "Service ml-pii/redis-user-profile-fleet"}   # and what exposes it
    assert any("Redis port 6379 without `--port 0 --tls-port 6379`" in m for _, _, m in found)
    assert any("Redis port 26379 without" in m for _, _, m in found)


def test_a_store_without_a_fleet_certificate_or_naming_the_wrong_host_is_flagged():
    no_cert = [o for o in redis() if o["kind"] != "Certificate"]
    found = findings(no_cert, rules=("data-path-tls",))
    assert any(f"mounts no certificate of the fleet issuer '{FLEET_ISSUER}'" in m for _, _, m in found)
    assert any(res == "Service ml-pii/redis-user-profile-fleet" and "selects no pod that serves TLS" in m for _, res, m in found)
    other_issuer = redis()
    next(o for o in other_issuer if o["kind"] == "Certificate")["spec"]["issuerRef"]["name"] = "self-signed"
    assert findings(other_issuer, rules=("data-path-tls",))
    wrong_host = redis()
    cert = next(o for o in wrong_host if o["kind"] == "Certificate")
    cert["spec"]["dnsNames"] = [n for n in cert["spec"]["dnsNames"] if ".fleet." not in n]
    assert [m for _, res, m in findings(wrong_host, rules=("data-path-tls",))] == [
        "other sites reach it as redis-user-profile-fleet.ml-pii.dc-local.fleet.local.hybridml.example, which no "
        "certificate of its pods names"]


def test_qdrant_and_feast_without_tls_are_flagged():
    col = next(c for c in ENV.collections if c.name == "help-docs")
    objs = copy.deepcopy(qdrant.objects(DC, col, "ml-internal", fleet_sources=[]))
    sts = objs[0]["spec"]["template"]["spec"]["containers"][0]
    sts["env"] = [e for e in sts["env"] if not e["name"].startswith("QDRANT__SERVICE__ENABLE_TLS")]
    assert any("Qdrant REST/gRPC without" in m for _, _, m in findings(objs, rules=("data-path-tls",)))
    fs = copy.deepcopy(feature_store.feast_object(DC, view("user-profile"), "ml-pii"))
    del fs["spec"]["services"]["onlineStore"]["server"]["tls"]
    assert [m for _, _, m in findings([fs], rules=("data-path-tls",))] == [
        "the Feast feature server serves plain HTTP (no services.onlineStore.server.tls)"]


# --------------------------------------------------------------------------- data-path-narrow


def test_the_plan_s_readers_networks_are_admitted_and_nothing_else():
    col = next(c for c in ENV.collections if c.name == "help-docs")        # on dc-local, read by aws-use1 (local plan)
    readers = site_networks(ENV)["aws-use1"]
    good = qdrant.objects(DC, col, "ml-internal", fleet_sources=readers)
    assert findings(good, rules=("data-path-narrow",)) == []
    wide = qdrant.objects(DC, col, "ml-internal", fleet_sources=["10.0.0.0/8"])
    assert [m for _, _, m in findings(wide, rules=("data-path-narrow",))] == [
        "loadBalancerSourceRanges: 10.0.0.0/8 is wider than the networks of the sites that read it (10.0.0.0/16)"]
    # user-profile is read by no other site: its load balancer admits a stranger
    stranger = [m for _, _, m in findings(redis(tuple(readers)), rules=("data-path-narrow",))]
    assert stranger == ["loadBalancerSourceRanges: 10.0.0.0/16 admits aws-use1, which the plan does not have read it"]
    open_lb = redis()
    del next(o for o in open_lb if o["spec"].get("type") == "LoadBalancer")["spec"]["loadBalancerSourceRanges"]
    assert any("admits any source" in m for _, _, m in findings(open_lb, rules=("data-path-narrow",)))


def test_a_network_policy_admitting_more_than_the_readers_is_flagged():
    col = next(c for c in ENV.collections if c.name == "help-docs")
    stores = qdrant.objects(DC, col, "ml-internal", fleet_sources=site_networks(ENV)["aws-use1"])
    instance = stores[0]["metadata"]["labels"]["app.kubernetes.io/instance"]

    def policies(cidrs: tuple[str, ...]) -> list[dict]:
        flows = network.NamespaceFlows("ml-internal", has_data=True,
                                       remote_readers={instance: network.RemoteReaders(instance, 6333, cidrs)})
        return network.serving_namespace(DC, flows, ["ml-internal"], [], [])

    good = policies(tuple(site_networks(ENV)["aws-use1"]))
    assert any(p["metadata"]["name"] == f"allow-remote-readers-{instance}" for p in good)
    assert findings(stores + good, rules=("data-path-narrow",)) == []
    found = findings(stores + policies(("0.0.0.0/0",)), rules=("data-path-narrow",))
    assert found == [("data-path-narrow", f"NetworkPolicy ml-internal/allow-remote-readers-{instance}",
                      "ingress[0] ipBlock 0.0.0.0/0 is wider than the networks of the sites that read it (10.0.0.0/16)")]


# --------------------------------------------------------------------------- the CrossGuard fixture, offline


def _fixture():
    path = REPO / "tests" / "e2e" / "fixtures" / "broken_program" / "__main__.py"
    spec = importlib.util.spec_from_file_location("broken_program_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # __name__ is not "__main__": builds nothing, defines objects()
    return module


def _mandatory(objs: list[tuple[str, dict]]) -> set[str]:
    """Mandatory rules the objects break under the local spec. `referents-exist` is left out: the fixture's stack
    holds only its probe objects, so their namespaces come from the local stack, which this offline run lacks."""
    rvs = [v for site, o in objs for v in views([o], site)]
    return {f.rule for f in evaluate([r for r in ALL_RULES if r.name != "referents-exist"], rvs, CTX) if f.mandatory}


@pytest.mark.parametrize("variant,rule", [("pii-state-to-bucket", "flink-state-in-site"),
                                          ("redis-without-tls", "data-path-tls")])
def test_the_crossguard_fixture_breaks_exactly_its_data_path_rule(variant, rule):
    fixture = _fixture()
    assert _mandatory(fixture.objects("none")) == set()
    assert _mandatory(fixture.objects(variant)) == {rule}


# --------------------------------------------------------------------------- `hybridml check`, broken


def _check(args: list[str], tmp_path) -> tuple[int, str, list[dict]]:
    out = tmp_path / "findings.json"
    result = CliRunner().invoke(app, ["check", *args, "--json", str(out)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output, json.loads(out.read_text()) if out.exists() else []


def _streaming_pii_spec(tmp_path) -> str:
    spec = yaml.safe_load((REPO / "infra" / "environments" / "local.yaml").read_text())
    next(v for v in spec["feature_views"] if v["name"] == "user-profile")["streaming"] = True
    path = tmp_path / "local-pii-stream.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def _mine(rows: list[dict]) -> list[dict]:
    return [f for f in rows if f["rule"] in RULES]


def test_check_blocks_pii_state_in_a_bucket(tmp_path, monkeypatch):
    spec = _streaming_pii_spec(tmp_path)
    code, _, rows = _check([spec], tmp_path)
    assert _mine(rows) == []                         # as rendered: a PVC on dc-local
    bucket = flink.FlinkState("s3://hybridml-flink-state/local/dc-local/user-profile")
    monkeypatch.setattr(flink, "flink_state", lambda *a, **k: bucket)
    code, output, rows = _check([spec], tmp_path)
    assert code == 1, output
    found = _mine(rows)
    assert {(f["rule"], f["resource"], f["cluster"]) for f in found} == {
        ("flink-state-in-site", "FlinkDeployment ml-pii/ingest-user-profile", "dc-local")}
    assert "s3://hybridml-flink-state/local/dc-local/user-profile/checkpoints leaves site dc-local" in found[0]["message"]
    assert "PVC" in found[0]["fix"] and "object_store" in found[0]["fix"]
    assert "flink-state-in-site" in output and "ml-pii/ingest-user-profile" in output


def test_check_blocks_redis_without_tls(tmp_path, monkeypatch):
    monkeypatch.setattr(rs, "tls_args", lambda *a, **k: [])
    code, output, rows = _check(["local"], tmp_path)
    assert code == 1, output
    found = _mine(rows)
    assert {f["rule"] for f in found} == {"data-path-tls"}
    assert {"StatefulSet ml-pii/redis-user-profile", "StatefulSet ml-internal/redis-item-stats"} <= {f["resource"] for f in found}
    assert all(FLEET_ISSUER in f["fix"] for f in found)
    assert "data-path-tls" in output


def test_check_blocks_a_load_balancer_open_to_the_private_range(tmp_path, monkeypatch):
    from workloads import planning

    original = planning.site_cidrs
    monkeypatch.setattr(planning, "site_cidrs", lambda env: {**original(env), "aws-use1": ["10.0.0.0/8"]})
    code, output, rows = _check(["local"], tmp_path)
    assert code == 1, output
    found = _mine(rows)
    assert {(f["rule"], f["resource"]) for f in found} >= {("data-path-narrow", "Service ml-internal/qdrant-help-docs-fleet")}
    assert any("10.0.0.0/8 is wider than the networks of the sites that read it (10.0.0.0/16)" in f["message"] for f in found)
