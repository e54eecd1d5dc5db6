"""Builders and components on small inputs: multi-node vLLM, Triton canaries, CPU autoscaling, data stores,
names, secrets, and the errors a user can hit."""
from __future__ import annotations

import copy
import json

import pulumi
import pytest

from clusters.handle import ClusterHandle
from infra import labels as L
from infra.labels import GPU_PRODUCT
from infra.loader import load_environment
from infra.spec import Environment
from policies.placement import solve
from tests.conftest import SMALL_SPEC
from tests.workloads.harness import TEST_SEED, _Mocks, render
from workloads import planning
from workloads.kube import ComponentError
from workloads.options import WorkloadOptions
from workloads.render import cpu, feature_store, meta, model_delivery, qdrant, triton, vllm
from workloads.render.context import SiteContext
from workloads.secrets import derive

CTX = SiteContext(env_name="tiny", site="aws-use1", site_kind="cloud", domain="tiny.example")


def _env(**changes) -> Environment:
    spec = copy.deepcopy(SMALL_SPEC)
    for key, value in changes.items():
        spec[key] = value
    return Environment.model_validate(spec)


def test_replica_wider_than_a_node_is_a_leaderworkerset():
    spec = copy.deepcopy(SMALL_SPEC)
    chat = spec["pipelines"][0]
    chat["engine"] = {"kind": "vllm", "tensor_parallel": 8, "pipeline_parallel": 2, "max_model_len": 32768}
    chat["resources"]["gpu"]["count"] = 16
    env = Environment.model_validate(spec)
    objs = vllm.objects(CTX, env, env.pipeline("chat"), 2, "ml-internal")
    lws = next(o for o in objs if o["kind"] == "LeaderWorkerSet")
    tmpl = lws["spec"]["leaderWorkerTemplate"]
    assert tmpl["size"] == 2 and lws["spec"]["replicas"] == 2
    leader = tmpl["leaderTemplate"]["spec"]["containers"][0]
    worker = tmpl["workerTemplate"]["spec"]["containers"][0]
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == "8" == worker["resources"]["limits"]["nvidia.com/gpu"]
    assert "--pipeline-parallel-size 2" in leader["args"][0] and "--distributed-executor-backend ray" in leader["args"][0]
    svc = next(o for o in objs if o["kind"] == "Service")
    assert svc["spec"]["selector"]["hybridml.io/lws-role"] == "leader"
    so = next(o for o in objs if o["kind"] == "ScaledObject")
    assert so["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"


def test_vllm_deployment_flags_and_volumes():
    env = load_environment("local")
    p = env.pipeline("chat-small")
    ctx = SiteContext(env_name="local", site="aws-use1", site_kind="cloud", domain="local.example")
    objs = vllm.objects(ctx, env, p, 2, "ml-internal")
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert [d["metadata"]["name"] for d in deployments] == ["chat-small-base", "chat-small-tuned"]
    c = deployments[0]["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    assert args[0] == model_delivery.cache_path("Qwen/Qwen2.5-1.5B-Instruct")   # from the shared cache, not the hub
    spec_cfg = json.loads(args[args.index("--speculative-config") + 1])
    assert spec_cfg == {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}
    assert args[args.index("--served-model-name") + 1] == "chat-small"
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "2", "memory": "12Gi", "nvidia.com/gpu": "1"}
    pod = deployments[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {GPU_PRODUCT: "NVIDIA-L4"}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["models"] == {"name": "models", "persistentVolumeClaim": {"claimName": model_delivery.CACHE_CLAIM}}
    assert pod["initContainers"][0]["args"][2:4] == ["Qwen/Qwen2.5-1.5B-Instruct", args[0]]
    assert "api-key" not in json.dumps(c.get("env", []))


def test_triton_canary_and_scaling():
    env = _env()
    spec = copy.deepcopy(SMALL_SPEC)
    spec["pipelines"].append({
        "name": "ranker", "engine": {"kind": "triton", "model_format": "tensorrt", "canary_traffic_percent": 10},
        "model": "s3://m/ranker/v2", "resources": {"cpu": 4, "memory_gib": 16, "gpu": {"type": "L4", "count": 1}},
        "capacity_rps": 400, "demand_rps": {"us-east": 100}, "latency": {"p99_ms": 200, "service_ms": 50}})
    env = Environment.model_validate(spec)
    (isvc,) = triton.inference_services(CTX, env, env.pipeline("ranker"), 3, "ml-internal")
    pred = isvc["spec"]["predictor"]
    assert pred["canaryTrafficPercent"] == 10
    assert (pred["minReplicas"], pred["maxReplicas"]) == (3, 6)
    assert pred["model"]["storageUri"] == "s3://m/ranker/v2" and pred["model"]["runtime"] == triton.RUNTIME
    assert pred["model"]["modelFormat"] == {"name": "tensorrt"}


def test_cpu_service_uses_hpa_or_keda_to_zero():
    env = load_environment("local")
    p = env.pipeline("embed-text")
    kinds = [o["kind"] for o in cpu.objects(CTX, env, p, 2, "ml-public", [], False)]
    assert kinds == ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]
    zero = p.model_copy(update={"autoscaling": p.autoscaling.model_copy(update={"scale_to_zero": True})})
    objs = cpu.objects(CTX, env, zero, 2, "ml-public", [], False)
    so = next(o for o in objs if o["kind"] == "ScaledObject")
    assert so["spec"]["minReplicaCount"] == 0


def test_redis_config_holds_the_password_only_in_files():
    env = load_environment("local")
    view = next(v for v in env.feature_views if v.name == "user-profile")
    files = feature_store.auth_files(view, "s3cr3t")
    assert "requirepass s3cr3t" in files["redis.conf"] and json.loads(files["exporter-passwords.json"])
    objs = feature_store.redis_objects(CTX, view, "ml-pii", fleet_sources=[])
    assert "s3cr3t" not in json.dumps(objs)
    sts = objs[0]
    assert sts["kind"] == "StatefulSet" and sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
    # data pods (StatefulSet), their headless and read Services, the Sentinel arbiter and its Service, one PDB, the
    # view's TLS certificate
    assert [o["kind"] for o in objs] == ["StatefulSet", "Service", "Service", "Deployment", "Service", "PodDisruptionBudget",
                                         "Certificate"]
    with_lb = feature_store.redis_objects(CTX, view, "ml-pii", fleet_sources=["10.9.0.0/16"])
    lb = with_lb[-1]
    assert lb["spec"]["type"] == "LoadBalancer" and lb["spec"]["loadBalancerSourceRanges"] == ["10.9.0.0/16"]
    assert lb["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]   # remote readers: any data pod
    assert lb["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"


def test_streaming_view_gets_a_flink_job():
    env = load_environment("local")
    view = next(v for v in env.feature_views if v.name == "item-stats")
    objs = feature_store.flink_objects(CTX, view, "ml-internal")
    flink = next(o for o in objs if o["kind"] == "FlinkDeployment")
    assert flink["spec"]["job"]["upgradeMode"] == "savepoint" and flink["spec"]["flinkVersion"] == "v1_20"
    assert {o["kind"] for o in objs} == {"ServiceAccount", "Role", "RoleBinding", "FlinkDeployment"}


def test_qdrant_collection_job_and_snapshots():
    env = load_environment("dev")
    col = env.collections[0]
    objs = qdrant.objects(CTX, col, "ml-internal", fleet_sources=[])
    sts = objs[0]
    assert sts["spec"]["replicas"] == col.replication_factor
    assert {v["metadata"]["name"] for v in sts["spec"]["volumeClaimTemplates"]} == {"storage", "snapshots"}
    job = next(o for o in objs if o["kind"] == "Job")
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert f'"size": {col.dimensions}' in script and f'"shard_number": {col.shards}' in script
    assert any(o["kind"] == "CronJob" for o in objs)


def test_k8s_names_are_dns_labels_and_stay_distinct():
    long = "a" * 40
    n1, n2 = meta.k8s_name(long, "variant-one-with-long-name"), meta.k8s_name(long, "variant-two-with-long-name")
    assert len(n1) <= 63 and n1 != n2
    assert meta.k8s_name("9lives") == "x-9lives"


def test_secrets_are_derived_per_purpose():
    assert derive("seed", "redis/a/b") == derive("seed", "redis/a/b")
    assert derive("seed", "redis/a/b") != derive("seed", "redis/a/c") != derive("other", "redis/a/b")
    assert len(derive("seed", "x")) == 32


def test_missing_cluster_and_missing_seed_are_errors():
    from workloads.stack import WorkloadsError, deploy_workloads

    env = load_environment("local")
    plan = solve(env)
    with pytest.raises(WorkloadsError, match="no cluster was given"):
        deploy_workloads(env, plan, {})
    pulumi.runtime.set_mocks(_Mocks(), project="hybridml", stack="t", preview=False)
    # the stack config is process-global: an earlier test's hybridml:secretSeed must not answer here
    from pulumi.runtime import config as runtime_config
    runtime_config.set_all_config({}, [])
    handles = {s: ClusterHandle(site=s, kind="cloud", provider=None, simulated=False) for s in plan.used_sites()}
    with pytest.raises(WorkloadsError, match="secretSeed"):
        deploy_workloads(env, plan, handles)
    from workloads.options import WorkloadOptions as Options
    from workloads.stack import PREVIEW_SEED, _seed

    pulumi.runtime.set_mocks(_Mocks(), project="hybridml", stack="t", preview=True)
    assert _seed(Options(), handles) == PREVIEW_SEED   # preview and `hybridml check` work without the secret


def test_pii_store_on_a_cloud_cluster_is_refused():
    import pulumi_kubernetes as k8s

    from workloads.feature_store import FeatureStore, FeatureStoreArgs

    env = load_environment("local")
    view = next(v for v in env.feature_views if v.name == "user-profile")
    pulumi.runtime.set_mocks(_Mocks(), project="hybridml", stack="t", preview=False)
    errors = []

    @pulumi.runtime.test
    def run():
        handle = ClusterHandle(site="aws-use1", kind="cloud", provider=k8s.Provider("p", kubeconfig="{}"),
                               privacy_tiers=["public", "internal"])
        try:
            FeatureStore("x", FeatureStoreArgs(view=view, cluster=handle, context=CTX, password="pw"))
        except ComponentError as exc:
            errors.append(str(exc))

    run()
    assert errors and "pii" in errors[0] and "aws-use1" in errors[0]


def test_render_options_override_images_and_domain():
    env = load_environment("local")
    plan = solve(env)
    from workloads.images import Images

    r = render(env, plan, simulated=True, options=WorkloadOptions(
        secret_seed=TEST_SEED, domain="ml.corp.example", images=Images(vllm="mirror.corp/vllm@sha256:" + "a" * 64)))
    images = {c["image"] for o in r.k8s("Deployment") for c in o.manifest["spec"]["template"]["spec"]["containers"]}
    assert "mirror.corp/vllm@sha256:" + "a" * 64 in images
    hosts = {lst["hostname"] for o in r.k8s("Gateway") for lst in o.manifest["spec"]["listeners"] if "hostname" in lst}
    assert hosts and all(h.endswith(".ml.corp.example") for h in hosts)
    assert r.summary["domain"] == "ml.corp.example"
    assert planning.WEIGHT_TOTAL == 1000


def test_describe_lists_sites_entries_and_routes(local_stack):
    from workloads.report import describe

    text = describe(local_stack.summary)
    assert "us-east.local.hybridml.example" in text and "us-east.pii.local.hybridml.example" in text
    assert "site dc-local (datacenter, simulated)" in text
    assert "recs-home" in text and "routes (pipeline, region" in text


def test_datacenter_pods_keep_to_their_home_zone_and_cloud_pods_may_use_any_allowed_zone():
    from workloads.render.model_pods import placement_affinity, tolerations

    def zones(affinity):
        return affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"][0]["matchExpressions"][0]["values"]

    dc = ("internal", "pii")
    assert zones(placement_affinity("internal", dc)) == ["internal"]
    assert zones(placement_affinity("public", dc)) == ["internal"]
    assert zones(placement_affinity("pii", dc)) == ["pii"]
    # internal pods no longer tolerate the pii racks' taint; pii pods do
    assert not [t for t in tolerations("internal", False, dc) if t["key"] == L.PRIVACY_TAINT_KEY]
    assert [t["value"] for t in tolerations("pii", False, dc)] == ["pii"]
    # a datacenter with pii racks only runs its internal work there
    assert zones(placement_affinity("internal", ("pii",))) == ["pii"]
    # cloud sites: every zone that may hold the tier (their nodes carry one zone label)
    assert zones(placement_affinity("internal")) == ["internal", "pii", "restricted"]
