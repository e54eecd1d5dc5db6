"""Model delivery (issue 19 part 7): the model servers run as their namespace's `model-server` ServiceAccount, and vLLM
reads its weights from the namespace's shared cache (one ReadWriteMany claim per site and namespace, filled once by
the first pod's init container), so a restart does not download them again."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from clusters.model_access import MODEL_CACHE_CLASS, MODEL_SERVICE_ACCOUNT
from infra.labels import namespace_for
from infra.loader import load_environment
from tests.workloads.podspecs import RESTRICTED_VOLUMES
from tests.workloads.schemas import validate
from workloads.render import model_delivery as md
from workloads.render import vllm
from workloads.render.context import SiteContext


def _pod_templates(o) -> list[dict]:
    spec = o.manifest.get("spec") or {}
    if o.kind == "Deployment":
        return [spec["template"]["spec"]]
    if o.kind == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        return [lwt["leaderTemplate"]["spec"], lwt["workerTemplate"]["spec"]]
    return []


@pytest.fixture(params=["dev", "prod"])
def stack(request):
    return request.getfixturevalue(f"{request.param}_stack")


def test_every_vllm_pod_reads_its_models_from_the_namespaces_shared_cache(stack):
    env = stack.env
    claims = {(o.site, o.namespace): o for o in stack.k8s("PersistentVolumeClaim") if o.obj_name == md.CACHE_CLAIM}
    pods_checked = 0
    for o in stack.objects:
        if o.manifest.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/name") != "vllm":
            continue
        for pod in _pod_templates(o):
            pipeline = env.pipeline(o.manifest["metadata"]["labels"]["hybridml.io/pipeline"])
            model = o.manifest["metadata"]["annotations"]["hybridml.io/model"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert not any("ephemeral" in v for v in volumes.values()), o.ref()          # no per-pod cache any more
            assert volumes[md.CACHE_VOLUME] == {"name": md.CACHE_VOLUME, "persistentVolumeClaim": {"claimName": md.CACHE_CLAIM}}
            claim = claims[(o.site, o.namespace)]
            assert claim.manifest["spec"]["accessModes"] == ["ReadWriteMany"]
            kind = env.site(o.site).kind
            assert claim.manifest["spec"].get("storageClassName") == (MODEL_CACHE_CLASS if kind == "cloud" else None)
            # the server: read-only cache, serves the local directory, never asks the hub
            (server,) = pod["containers"]
            mount = next(m for m in server["volumeMounts"] if m["name"] == md.CACHE_VOLUME)
            assert mount["readOnly"] is True and mount["mountPath"] == md.CACHE_MOUNT
            args = server["args"] if server["name"] == "vllm" else []
            if args:
                assert args[0] == md.cache_path(model) and "--download-dir" not in args
            env_vars = {e["name"]: e.get("value") for e in server.get("env", [])}
            assert env_vars["HF_HUB_OFFLINE"] == "1" and not env_vars["HF_HOME"].startswith(md.CACHE_MOUNT)
            # the fill: the same models to the same directories, within the server's own requests
            (fill,) = pod["initContainers"]
            assert fill["args"][2:] == [a for m in md.pod_models(pipeline, model) for a in (m, md.cache_path(m))]
            for res in ("cpu", "memory"):
                assert _quantity(fill["resources"]["requests"][res]) <= _quantity(server["resources"]["requests"][res])
            assert fill["resources"]["requests"] == fill["resources"]["limits"]
            assert fill["securityContext"]["readOnlyRootFilesystem"] and fill["securityContext"]["runAsNonRoot"]
            # the identity: the namespace's model-server ServiceAccount, no API token
            assert pod["serviceAccountName"] == MODEL_SERVICE_ACCOUNT and pod["automountServiceAccountToken"] is False
            assert {k for v in pod["volumes"] for k in v if k != "name"} <= RESTRICTED_VOLUMES
            pods_checked += 1
    assert pods_checked > 0


def _quantity(q: str) -> float:
    from infra.kube import quantity_value

    return quantity_value(q)


def test_model_servers_run_as_a_service_account_the_program_creates(stack):
    env = stack.env
    for site in stack.plan.used_sites():
        accounts = {o.namespace: o for o in stack.k8s("ServiceAccount", site) if o.obj_name == MODEL_SERVICE_ACCOUNT}
        expected = {namespace_for(env.pipeline(p).privacy_tier) for p in stack.plan.site(site).pipelines
                    if env.pipeline(p).engine.kind in ("vllm", "triton")}
        assert set(accounts) == expected, site
        assert all(a.manifest["automountServiceAccountToken"] is False for a in accounts.values())
        for isvc in stack.k8s("InferenceService", site):
            assert isvc.manifest["spec"]["predictor"]["serviceAccountName"] == MODEL_SERVICE_ACCOUNT
            assert isvc.namespace in accounts
        vllm_ns = {namespace_for(env.pipeline(p).privacy_tier) for p in stack.plan.site(site).pipelines
                   if env.pipeline(p).engine.kind == "vllm"}
        claims = {o.namespace for o in stack.k8s("PersistentVolumeClaim", site) if o.obj_name == md.CACHE_CLAIM}
        assert claims == vllm_ns, site


def test_delivery_objects_are_schema_valid():
    env = load_environment("dev")
    ctx = SiteContext(env_name="dev", site="aws-use1", site_kind="cloud", domain="dev.example")
    placed = [p.name for p in env.pipelines if p.engine.kind in ("vllm", "triton")]
    objs = md.objects(ctx, env, placed, MODEL_CACHE_CLASS)
    assert {o["kind"] for o in objs} == {"ServiceAccount", "PersistentVolumeClaim"}
    p = next(p for p in env.pipelines if p.engine.kind == "vllm")
    objs += vllm.objects(ctx, env, p, 1, namespace_for(p.privacy_tier))
    for o in objs:
        assert validate(o) == [], (o["kind"], validate(o))
    # one claim per namespace, as large as its distinct models' estimates together
    (claim,) = [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    ns = claim["metadata"]["namespace"]
    size = md.cache_gib(env, "aws-use1", [n for n in placed if namespace_for(env.pipeline(n).privacy_tier) == ns])
    assert claim["spec"]["resources"]["requests"]["storage"] == f"{size}Gi" and size >= 720


def test_cache_directories_are_stable_distinct_and_safe():
    a, b = md.cache_dir("meta-llama/Llama-3.3-70B-Instruct"), md.cache_dir("meta-llama--Llama-3.3-70B-Instruct")
    assert a != b and a == md.cache_dir("meta-llama/Llama-3.3-70B-Instruct")
    s3 = md.cache_dir("s3://bucket/path/to/model")
    assert "/" not in a + s3 and ".." not in s3 and s3.startswith("bucket--path--to--model-")


_STUBS = {
    "huggingface_hub/__init__.py": """
        import os, pathlib
        def snapshot_download(repo_id, local_dir, ignore_patterns=None):
            log = pathlib.Path(os.environ["STUB_LOG"]); log.write_text(log.read_text() + f"hub {repo_id}\\n")
            (pathlib.Path(local_dir) / "config.json").write_text(repo_id)
            assert ignore_patterns == ["original/*"]
    """,
    "boto3/__init__.py": """
        import os, pathlib
        class _Pages:
            def paginate(self, Bucket, Prefix):
                yield {"Contents": [{"Key": Prefix + "1/model.onnx"}, {"Key": Prefix + "config.pbtxt"}, {"Key": Prefix + "1/"}]}
        class _S3:
            def get_paginator(self, name):
                return _Pages()
            def download_file(self, bucket, key, target):
                log = pathlib.Path(os.environ["STUB_LOG"]); log.write_text(log.read_text() + f"s3 {bucket}/{key}\\n")
                pathlib.Path(target).write_text(key)
        def client(name):
            return _S3()
    """,
}


def test_the_fill_downloads_each_model_once_and_later_pods_reuse_it(tmp_path):
    """The init container's script, run as the pod runs it (`python3 -c SCRIPT model dir ...`), against stand-ins for
    the hub and S3: the first run fills both directories and marks them complete; a restart downloads nothing."""
    for path, text in _STUBS.items():
        (tmp_path / "stubs" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "stubs" / path).write_text(textwrap.dedent(text))
    log = tmp_path / "log"
    log.write_text("")
    cache = tmp_path / "models"
    models = ["meta-llama/Llama-3.1-8B-Instruct", "s3://hybridml-models/ranker-000/v1"]
    args = [a for m in models for a in (m, str(cache / md.cache_dir(m)))]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "stubs"), "STUB_LOG": str(log)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", md.FILL_SCRIPT, *args], check=True, env=env, capture_output=True)
    assert log.read_text().splitlines() == ["hub meta-llama/Llama-3.1-8B-Instruct",
                                            "s3 hybridml-models/ranker-000/v1/1/model.onnx",
                                            "s3 hybridml-models/ranker-000/v1/config.pbtxt"]
    s3_dir = cache / md.cache_dir(models[1])
    assert (s3_dir / "1" / "model.onnx").read_text() == "ranker-000/v1/1/model.onnx"
    assert all((cache / md.cache_dir(m) / md.COMPLETE_MARKER).exists() for m in models)


def test_model_servers_on_cloud_sites_may_reach_the_pod_identity_agent_and_no_one_else_does():
    """Default-deny egress would otherwise drop the S3 credentials the model-server role hands out (port 80 of the
    node-local EKS Pod Identity agent); datacenter model servers get no such rule."""
    from hybridml.ops.check import program_views
    from workloads.render.network import POD_IDENTITY_AGENT

    views, ctx = program_views("dev")
    seen = {}
    for v in views:
        if v.kind == "NetworkPolicy" and v.metadata["name"] == "allow-model-download":
            agent = [rule for rule in v.props["spec"]["egress"] if rule["to"] == [{"ipBlock": {"cidr": POD_IDENTITY_AGENT}}]]
            seen[v.cluster] = agent
    assert seen, "no model-download policy rendered"
    for site, agent in seen.items():
        if ctx.sites[site].kind == "cloud":
            assert agent and agent[0]["ports"] == [{"protocol": "TCP", "port": 80}], site
        else:
            assert agent == [], site
