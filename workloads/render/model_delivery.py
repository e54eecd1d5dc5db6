"""How model pods get their weights (clusters/model_access.py is the contract with the clusters). Pure: returns manifests.

- Identity: the `model-server` ServiceAccount in every serving namespace of a site that runs vLLM or Triton pipelines;
  vLLM pods and Triton predictors run as it (no API token mounted). On cloud sites EKS Pod Identity gives it a role
  that reads exactly the S3 model prefixes of the pipelines placed in that namespace (KServe's storage initializer,
  the cache fill below).
- Cache: one ReadWriteMany claim `model-cache` per serving namespace and site that runs vLLM. Every vLLM pod
  mounts it read-only at /models; its init container `fill-model-cache` fills the directory of each model the pod
  serves (hub snapshot or s3:// prefix; a speculative draft model too) unless a marker says an earlier pod did, so a
  restart, a rescheduled or an added replica reads the weights from the cache instead of downloading them again.
  vLLM then loads a local directory with the hub switched off (`HF_HUB_OFFLINE`).
"""
from __future__ import annotations

import hashlib
import math
import re

from clusters.model_access import MODEL_SERVICE_ACCOUNT, pipeline_models
from infra.labels import namespace_for
from infra.spec import Environment, Pipeline
from workloads import planning
from workloads.render import meta, pods
from workloads.render.context import SiteContext

SERVICE_ACCOUNT = MODEL_SERVICE_ACCOUNT
CACHE_CLAIM = "model-cache"
CACHE_VOLUME = "models"
CACHE_MOUNT = "/models"
COMPLETE_MARKER = ".hybridml-complete"
HF_TOKEN_MOUNT = "/var/run/secrets/hf"

# Fills /models/<dir> for each (model, dir) pair of its arguments; a directory with the marker is complete already.
# Hub ids: a snapshot without Meta's duplicate `original/` checkpoints; s3://bucket/prefix: every object under it.
FILL_SCRIPT = """\
import pathlib, sys
def fill(model, dest):
    dest = pathlib.Path(dest)
    done = dest / '""" + COMPLETE_MARKER + """'
    if done.exists():
        print(f'{model}: in the cache', flush=True)
        return
    dest.mkdir(parents=True, exist_ok=True)
    print(f'{model}: filling {dest}', flush=True)
    if model.startswith('s3://'):
        import boto3
        bucket, _, prefix = model[5:].partition('/')
        prefix = prefix.strip('/')
        s3 = boto3.client('s3')
        listed = prefix + '/' if prefix else ''
        keys = [o['Key'] for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=listed)
                for o in page.get('Contents', []) if not o['Key'].endswith('/')]
        for key in keys or [prefix]:
            target = dest / (key[len(listed):] if keys else key.rsplit('/', 1)[-1])
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
    else:
        from huggingface_hub import snapshot_download
        snapshot_download(repo_id=model, local_dir=str(dest), ignore_patterns=['original/*'])
    done.touch()
for model, dest in zip(sys.argv[1::2], sys.argv[2::2]):
    fill(model, dest)
"""


def cache_dir(model: str) -> str:
    """The model's directory in the cache: readable, and distinct for distinct model ids."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", model.removeprefix("s3://")).strip("-.")[:80]
    return f"{slug}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def cache_path(model: str) -> str:
    """Where a vLLM pod finds `model`: the local directory it serves from."""
    return f"{CACHE_MOUNT}/{cache_dir(model)}"


def cached_models(p: Pipeline) -> list[str]:
    """What a vLLM pipeline's pods read from the cache: its models and a draft model."""
    return pipeline_models(p) if p.engine.kind == "vllm" else []


def pod_models(p: Pipeline, model: str) -> list[str]:
    """What one vLLM pod of `p` serving `model` (a variant's) reads from the cache: the model and a draft model."""
    spec = getattr(p.engine, "speculative", None)
    draft = [spec.model] if spec is not None and spec.model.strip("[]").lower() != "ngram" else []
    return list(dict.fromkeys([model, *draft]))


def model_gib(env: Environment, site: str, p: Pipeline) -> int:
    """Room for one of `p`'s models: its weights fit the GPU memory of one replica (all its nodes), 10 % over, plus
    tokenizer files; at least 20 GiB, rounded up to 10 GiB."""
    if not p.gpu:
        return 20
    _, mem = planning.gpu_node_shape(env, site, p.gpu.type)
    return int(max(20, math.ceil((p.gpu.count * (mem or 80) * 1.1 + 10) / 10) * 10))


def namespaces(env: Environment, pipelines: list[str] | dict[str, int]) -> dict[str, list[str]]:
    """Serving namespace -> its vLLM and Triton pipelines among `pipelines` (those that run as the ServiceAccount)."""
    out: dict[str, list[str]] = {}
    for name in sorted(pipelines):
        p = env.pipeline(name)
        if p.engine.kind in ("vllm", "triton"):
            out.setdefault(namespace_for(p.privacy_tier), []).append(name)
    return out


def cache_gib(env: Environment, site: str, pipelines: list[str]) -> int:
    """Size of a namespace's cache claim: every distinct model its vLLM pipelines read, each at its largest estimate."""
    sizes: dict[str, int] = {}
    for name in pipelines:
        p = env.pipeline(name)
        for model in cached_models(p):
            sizes[model] = max(sizes.get(model, 0), model_gib(env, site, p))
    return sum(sizes.values())


def objects(ctx: SiteContext, env: Environment, pipelines: list[str] | dict[str, int],
            storage_class: str | None) -> list[dict]:
    """Per serving namespace of the site's model servers: the ServiceAccount, and where vLLM runs the cache claim.
    `storage_class`: a ReadWriteMany class (None: the cluster's default, which must serve ReadWriteMany)."""
    out: list[dict] = []
    for ns, names in namespaces(env, pipelines).items():
        tier = ns.removeprefix("ml-")
        out.append({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": meta.metadata(SERVICE_ACCOUNT, ns, meta.labels("model-server", "identity", site=ctx.site,
                                                                                tier=tier)),
                    "automountServiceAccountToken": False})
        size = cache_gib(env, ctx.site, names)
        if size:
            spec: dict = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": f"{size}Gi"}}}
            if storage_class:
                spec["storageClassName"] = storage_class
            out.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": meta.metadata(CACHE_CLAIM, ns, meta.labels("vllm", "model-cache", site=ctx.site,
                                                                                tier=tier)),
                        "spec": spec})
    return out


def cache_volume() -> dict:
    """The namespace's cache claim as a pod volume (writable by the fill container; the server mounts it read-only)."""
    return {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": CACHE_CLAIM}}


def fill_container(image: str, models: list[str], cpu: float, memory_gib: float) -> dict:
    """Init container that fills the cache with `models` (no-op when a pod did before), as the serving UID, with the
    optional Hugging Face token (gated models) and the pod's S3 identity. Requests at most 4 cores and 16 GiB and no
    more than the server itself, so the pod needs nothing the placement did not count."""
    args = ["-c", FILL_SCRIPT] + [a for m in models for a in (m, cache_path(m))]
    env = [{"name": "HOME", "value": "/tmp/home"}, {"name": "HF_HOME", "value": "/tmp/hf"},
           {"name": "HF_TOKEN_PATH", "value": f"{HF_TOKEN_MOUNT}/token"}, {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
           {"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "1"}]
    return pods.container(
        "fill-model-cache", image, command=["python3"], args=args, env=env,
        res=pods.resources(min(cpu, 4), min(memory_gib, 16)), readiness=None, liveness=None,
        mounts=[{"name": "tmp", "mountPath": "/tmp"}, {"name": CACHE_VOLUME, "mountPath": CACHE_MOUNT},
                {"name": "hf-token", "mountPath": HF_TOKEN_MOUNT, "readOnly": True}])
