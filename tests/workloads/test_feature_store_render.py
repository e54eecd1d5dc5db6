"""The feature store's manifests on their own: the Feast repository generated from the spec, the FeatureStore that
mounts it, and Redis with Sentinel (configs, start scripts, one PDB over the Sentinels, the clients' view of it).
Pure renders, no Pulumi; the real Feast and Redis run in test_feast_real.py."""
from __future__ import annotations

import ast
import shutil
import subprocess

import pytest
import yaml

from infra.loader import load_environment
from infra.spec import FeatureView
from tests.workloads import schemas
from workloads import planning
from workloads.render import data, feast_repo, feature_store, network
from workloads.render import redis_sentinel as rs
from workloads.render.context import SiteContext

CTX = SiteContext(env_name="local", site="dc-local", site_kind="datacenter", domain="hybridml.test")
NS = "ml-pii"


@pytest.fixture(scope="module")
def views() -> dict[str, FeatureView]:
    return {v.name: v for v in load_environment("local").feature_views}


def _calls(tree: ast.Module, func: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == func]


def _kw(call: ast.Call, name: str) -> str:
    """The source of keyword argument `name`; string constants as their value."""
    value = next(k.value for k in call.keywords if k.arg == name)
    return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else ast.unparse(value)


def test_definitions_carry_the_spec_types_keys_ttl_and_sources(views):
    view = views["item-stats"]
    text = feast_repo.definitions(view, "local")
    tree = ast.parse(text)
    entity = _calls(tree, "Entity")[0]
    assert _kw(entity, "name") == "item_id" and (_kw(entity, "value_type")) == "ValueType.STRING"
    fv = _calls(tree, "FeatureView")[0]
    assert _kw(fv, "name") == "item_stats" and (_kw(fv, "ttl")) == f"timedelta(seconds={view.ttl_seconds})"
    schema = {ast.literal_eval(c.keywords[0].value): ast.unparse(c.keywords[1].value) for c in _calls(tree, "Field")}
    assert schema == {"item_id": "String", "visits_1h": "Int64", "ctr_1h": "Float32", "genre": "String", "tags": "Array(String)"}
    source = _calls(tree, "FileSource")[0]
    assert _kw(source, "path") == view.source.path and _kw(source, "created_timestamp_column") == "created_at"
    push = _calls(tree, "PushSource")[0]                  # streaming: the stream job pushes, materialization reads the file
    assert _kw(push, "name") == "item_stats_push" and (_kw(fv, "source")) == "item_stats_push"
    batch_only = ast.parse(feast_repo.definitions(views["user-profile"], "local"))
    assert not _calls(batch_only, "PushSource") and (_kw(_calls(batch_only, "FeatureView")[0], "source")) == "user_profile_batch"


def test_a_view_without_features_or_source_gets_the_default_source_and_an_inferred_schema():
    view = FeatureView(name="legacy-view", entities=["user_id"])   # what specs before the Feast fields said
    tree = ast.parse(feast_repo.definitions(view, "prod"))
    assert _kw(_calls(tree, "FileSource")[0], "path") == "s3://hybridml-features/prod/legacy-view.parquet"
    assert [ast.literal_eval(c.keywords[0].value) for c in _calls(tree, "Field")] == ["user_id"]   # keys only: apply infers


def test_the_repository_configmap_holds_no_secret_and_talks_to_the_three_sentinels(views):
    view = views["user-profile"]
    cm = feature_store.feast_repo_object(CTX, view, NS)
    assert schemas.validate(cm) == []
    assert set(cm["data"]) == {"feature_store.yaml", "definitions.py"}
    conf = yaml.safe_load(cm["data"]["feature_store.yaml"])
    store = conf["online_store"]
    assert conf["project"] == "user_profile" and store["redis_type"] == "redis_sentinel"
    assert store["sentinel_master"] == rs.master_name(view)
    hosts = [h for h in store["connection_string"].split(",") if "=" not in h and not h.startswith('"')]
    assert hosts == [f"{h}:{data.SENTINEL_PORT}" for h in data.sentinel_hosts(view.name, NS)] and len(hosts) == 3
    assert "password=${HYBRIDML_REDIS_PASSWORD}" in store["connection_string"]


def test_the_featurestore_mounts_the_generated_repository_and_validates(views):
    view = views["user-profile"]
    fs = feature_store.feast_object(CTX, view, NS)
    assert schemas.validate(fs) == []
    spec = fs["spec"]
    assert spec["feastProject"] == "user_profile"
    assert spec["feastProjectDir"] == {"packaged": {"image": CTX.images.feast, "featureRepoPath": feature_store.FEATURE_REPO_MOUNT}}
    volume = spec["services"]["volumes"][0]
    assert volume["configMap"]["name"] == feature_store.feast_repo_object(CTX, view, NS)["metadata"]["name"]
    mount = spec["services"]["onlineStore"]["server"]["volumeMounts"][0]
    assert mount == {"name": volume["name"], "mountPath": feature_store.FEATURE_REPO_MOUNT, "readOnly": True}
    secret = yaml.safe_load(feature_store.feast_store_secret(view, NS, "pw-123"))
    assert secret["redis_type"] == "redis_sentinel" and "password=pw-123" in secret["connection_string"]
    # TLS to Redis (the view's certificate as client certificate) and to the Sentinels (Feast gives them one option)
    assert "ssl=true,ssl_certfile=/etc/redis/tls/tls.crt" in secret["connection_string"]
    assert secret["connection_string"].endswith('sentinel_kwargs={"ssl":true}')
    server = spec["services"]["onlineStore"]["server"]
    assert server["tls"] == {"secretRef": {"name": feature_store.feast_tls_secret_name(view)}}
    assert {"name": "SSL_CERT_FILE", "value": "/etc/redis/tls/ca.crt"} in server["env"]
    assert "type" not in secret   # the operator takes the type from persistence.store.type


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_one_budget_covers_every_sentinel_and_each_pod_has_exactly_one(views):
    objs = feature_store.redis_objects(CTX, views["user-profile"], NS, fleet_sources=[])
    for o in objs:
        assert schemas.validate(o) == [], o["kind"]
    pods = {o["kind"]: o["spec"]["template"]["metadata"]["labels"] for o in objs if o["kind"] in ("StatefulSet", "Deployment")}
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    for kind, labels in pods.items():
        assert sum(_matches(p["spec"]["selector"]["matchLabels"], labels) for p in pdbs) == 1, kind
    assert pdbs[0]["spec"]["maxUnavailable"] == 1
    sts = next(o for o in objs if o["kind"] == "StatefulSet")
    arbiter = next(o for o in objs if o["kind"] == "Deployment")
    # the StatefulSet must not adopt the arbiter, and the arbiter prefers a node without a data pod
    assert not _matches(sts["spec"]["selector"]["matchLabels"], arbiter["spec"]["template"]["metadata"]["labels"])
    anti = arbiter["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert {c["name"] for c in sts["spec"]["template"]["spec"]["containers"]} == {"redis", "exporter", "sentinel"}


def test_redis_and_sentinel_files_agree(views):
    view = views["user-profile"]
    files = feature_store.auth_files(view, "s3cr3t")
    renamed = rs.config_command("s3cr3t")
    assert f"rename-command CONFIG {renamed}" in files["redis.conf"]           # clients have no CONFIG ...
    assert f"sentinel rename-command {rs.master_name(view)} CONFIG {renamed}" in files["sentinel-master.conf"]   # Sentinel has
    assert "appendonly yes" in files["redis.conf"] and "user admin on >s3cr3t" in files["sentinel.conf"]
    assert "user default on nopass resetchannels -@all +ping" in files["sentinel.conf"]     # discovery only, no password
    assert rs.config_command("other") != renamed


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_start_scripts_are_valid_shell_and_name_every_sentinel(views):
    view = views["item-stats"]
    objs = feature_store.redis_objects(CTX, view, NS, fleet_sources=[])
    scripts = [c["args"][0] for o in objs if o["kind"] in ("StatefulSet", "Deployment")
               for c in o["spec"]["template"]["spec"]["containers"] if c["name"] in ("redis", "sentinel")]
    assert len(scripts) == 3
    for script in scripts:
        assert subprocess.run(["sh", "-n", "-c", script], capture_output=True).returncode == 0, script
        for host in data.sentinel_hosts(view.name, NS):
            assert host in script
    assert "--replicaof" in scripts[0] and "sentinel monitor" in scripts[1] and f" {rs.QUORUM}" in scripts[2]


def test_clients_read_any_data_pod_and_find_the_primary_through_sentinel():
    reads = [planning.DataRead(kind="feature_view", name="user-profile", data_site="dc-local", tier=load_environment("local")
                               .feature_views[0].privacy_tier)]
    env = {e["name"]: e["value"] for e in data.client_env(reads, "dc-local", "hybridml.test")}
    assert env["HYBRIDML_FEATURES_USER_PROFILE_REDIS"] == f"redis-user-profile.{NS}.svc.cluster.local:6379"
    assert env["HYBRIDML_FEATURES_USER_PROFILE_REDIS_SENTINEL_MASTER"] == "redis-user-profile"
    assert len(env["HYBRIDML_FEATURES_USER_PROFILE_REDIS_SENTINELS"].split(",")) == 3
    remote = {e["name"] for e in data.client_env(reads, "aws-use1", "hybridml.test")}
    assert "HYBRIDML_FEATURES_USER_PROFILE_REDIS_SENTINELS" not in remote   # Sentinel names are cluster-internal


def test_network_policies_let_sentinels_and_clients_reach_port_26379():
    flows = network.NamespaceFlows(namespace=NS, has_data=True)
    pols = {p["metadata"]["name"]: p for p in network.serving_namespace(CTX, flows, [NS], [], [])}
    peers = pols["allow-data-peers"]["spec"]
    assert {"protocol": "TCP", "port": data.SENTINEL_PORT} in peers["ingress"][0]["ports"]
    assert {"protocol": "TCP", "port": data.SENTINEL_PORT} in peers["egress"][0]["ports"]
    assert {"protocol": "TCP", "port": data.SENTINEL_PORT} in pols["allow-data-clients"]["spec"]["ingress"][0]["ports"]
