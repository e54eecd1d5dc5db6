"""Batch pipelines on KubeRay (`ray.io/v1`): one RayCluster per site the batch stage uses. Pure: returns manifests.

- a one-off pipeline (`deadline_hours`, no `schedule`): a **RayJob** with its `rayClusterSpec`; the operator creates
  the cluster, submits the entrypoint from a submitter pod (`submitterPodTemplate`), and deletes the cluster when the
  job ends (`shutdownAfterJobFinishes`); `activeDeadlineSeconds` is the deadline;
- a recurring pipeline (`schedule`): a **RayCluster** that idles with its head only (in-tree autoscaling, workers
  0..planned) and a **CronJob** whose pod submits the entrypoint to the head's dashboard at every run
  (`concurrencyPolicy: Forbid`, `activeDeadlineSeconds` the run's window); Ray's autoscaler starts the workers.

Every pod keeps to its tier like the serving stack's (`model_pods`: privacy-zone affinity, the zone and GPU taints'
tolerations, the GPU product), runs under Pod Security `restricted` (`pods`), at the `hybridml-batch` priority
(online pods preempt it), labelled `hybridml.io/batch-pipeline`. Cloud workers are pinned to the capacity type the
plan chose (`karpenter.sh/capacity-type`: one worker group per type); heads run on on-demand nodes.

The Ray program (the entrypoint) reads `HYBRIDML_BATCH_*` variables: a vLLM pipeline runs `BATCH_SCRIPT`
(`ray.data.llm` over the site's shard of the input), a CPU pipeline its own `engine.entrypoint`. A site's shard is a
range of 10,000 hash buckets of the row ids, in proportion to the items the plan gives it.
"""
from __future__ import annotations

import math
import shlex
from typing import Any

from clusters.baseline import PRIORITY_BATCH
from infra import labels as L
from infra.batch import BatchPipeline, VllmBatchEngine
from policies.placement.plan import BatchPlacement, BatchSitePlacement
from workloads.render import meta, pods
from workloads.render.context import SiteContext, service_fqdn
from workloads.render.model_pods import placement_affinity, tolerations

API_VERSION = "ray.io/v1"
RAY_VERSION = "2.49.1"          # = the tag of Images.ray_llm
DASHBOARD_PORT = 8265
GCS_PORT = 6379
SCRIPT_MOUNT = "/opt/hybridml/batch"
SCRIPT_FILE = "run_vllm.py"
SHARD_BUCKETS = 10_000
SUBMITTER_CPU, SUBMITTER_MEMORY_GIB = 0.5, 1.0
AUTOSCALER_CPU, AUTOSCALER_MEMORY_GIB = 0.5, 0.5
TTL_AFTER_FINISHED_SECONDS = 3600
IDLE_TIMEOUT_SECONDS = 120
CAPACITY_TYPES = {"on-demand": "workers", "spot": "workers-spot", "own": "workers"}

BATCH_SCRIPT = '''\
"""hybridml batch pipeline: vLLM offline inference through Ray Data over this site's shard (generated)."""
import os
import zlib

import ray
from ray.data.llm import build_llm_processor, vLLMEngineProcessorConfig

env = os.environ
lo, hi = int(env["HYBRIDML_BATCH_SHARD_LO"]), int(env["HYBRIDML_BATCH_SHARD_HI"])
buckets = int(env["HYBRIDML_BATCH_SHARD_BUCKETS"])


def in_shard(row):
    return lo <= zlib.crc32(str(row["id"]).encode()) % buckets < hi


config = vLLMEngineProcessorConfig(
    model_source=env["HYBRIDML_BATCH_MODEL"],
    engine_kwargs={"tensor_parallel_size": int(env["HYBRIDML_BATCH_TENSOR_PARALLEL"]),
                   "max_model_len": int(env["HYBRIDML_BATCH_MAX_MODEL_LEN"]),
                   "gpu_memory_utilization": float(env["HYBRIDML_BATCH_GPU_MEMORY_UTILIZATION"])},
    concurrency=int(env["HYBRIDML_BATCH_WORKERS"]),
    batch_size=int(env["HYBRIDML_BATCH_BATCH_SIZE"]),
)
processor = build_llm_processor(
    config,
    preprocess=lambda row: {"messages": [{"role": "user", "content": row["prompt"]}],
                            "sampling_params": {"max_tokens": int(env["HYBRIDML_BATCH_OUTPUT_LIMIT"])}},
    postprocess=lambda row: {"id": row["id"], "output": row["generated_text"]},
)
ray.init()
ds = ray.data.read_parquet(env["HYBRIDML_BATCH_INPUT_URI"]).filter(in_shard)
processor(ds).write_parquet(env["HYBRIDML_BATCH_OUTPUT_URI"])
'''


def name(b: BatchPipeline) -> str:
    """The RayJob or RayCluster of a batch pipeline (its pods are `<name>-head-...`, `<name>-workers-...`)."""
    return meta.k8s_name(b.name, limit=40)


def script_name(b: BatchPipeline) -> str:
    return meta.k8s_name(b.name, "batch-script")


def submit_name(b: BatchPipeline) -> str:
    return meta.k8s_name(b.name, "submit", limit=52)     # a CronJob's name: at most 52 characters


def head_service(b: BatchPipeline, namespace: str) -> str:
    """The head's Service, which KubeRay names `<cluster>-head-svc`."""
    return service_fqdn(f"{name(b)}-head-svc", namespace)


def shard(placement: BatchPlacement, site: str) -> tuple[int, int]:
    """[lo, hi) of SHARD_BUCKETS: the site's range, in proportion to its items (sites in name order)."""
    done = 0
    for s in sorted(placement.sites, key=lambda s: s.site):
        lo = round(SHARD_BUCKETS * done / placement.items)
        done += s.items
        if s.site == site:
            return lo, round(SHARD_BUCKETS * done / placement.items)
    raise KeyError(site)


def batch_env(ctx: SiteContext, b: BatchPipeline, placement: BatchPlacement, share: BatchSitePlacement) -> list[dict]:
    lo, hi = shard(placement, share.site)
    values: dict[str, str] = {
        "PIPELINE": b.name, "SITE": ctx.site, "MODEL": b.model, "INPUT_URI": b.input,
        "OUTPUT_URI": f"{b.output.rstrip('/')}/site={ctx.site}/", "ITEMS": str(share.items), "WORKERS": str(share.workers),
        "SHARD_LO": str(lo), "SHARD_HI": str(hi), "SHARD_BUCKETS": str(SHARD_BUCKETS),
        "BATCH_SIZE": str(b.engine.batch_size), "DEADLINE_SECONDS": str(math.ceil(b.window_hours * 3600)),
    }
    if isinstance(b.engine, VllmBatchEngine):
        values.update({"TENSOR_PARALLEL": str(b.engine.tensor_parallel), "MAX_MODEL_LEN": str(b.engine.max_model_len),
                       "GPU_MEMORY_UTILIZATION": str(b.engine.gpu_memory_utilization),
                       "OUTPUT_LIMIT": str(b.engine.max_tokens)})
    out = [{"name": f"HYBRIDML_BATCH_{k}", "value": v} for k, v in values.items()]
    # Ray, Hugging Face and vLLM caches under /tmp: the root filesystem stays read-only
    out += [{"name": "HOME", "value": "/tmp/home"}, {"name": "HF_HOME", "value": "/tmp/hf"},
            {"name": "XDG_CACHE_HOME", "value": "/tmp/cache"}, {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}]
    return out


def entrypoint(b: BatchPipeline) -> str:
    if isinstance(b.engine, VllmBatchEngine):
        return f"python {SCRIPT_MOUNT}/{SCRIPT_FILE}"
    return b.engine.entrypoint


def image(ctx: SiteContext, b: BatchPipeline) -> str:
    return ctx.images.ray_llm if isinstance(b.engine, VllmBatchEngine) else b.engine.image


def _labels(ctx: SiteContext, b: BatchPipeline, component: str) -> dict[str, str]:
    lbls = meta.labels("ray", component, instance=name(b), version=meta.image_version(image(ctx, b)), site=ctx.site,
                       tier=b.privacy_tier)
    lbls[meta.BATCH_PIPELINE] = b.name
    return lbls


def _scheduling(ctx: SiteContext, b: BatchPipeline, *, gpu: bool, capacity_type: str | None) -> dict[str, Any]:
    """Affinity, tolerations and node selector of a batch pod: its tier's zones (as online pods), its GPU product,
    and on cloud sites the capacity type the plan chose."""
    selector: dict[str, str] = {}
    if gpu and b.resources.gpu:
        selector[L.GPU_PRODUCT] = L.gpu_product(b.resources.gpu.type)
    if ctx.site_kind == "cloud" and capacity_type in ("on-demand", "spot"):
        selector[L.KARPENTER_CAPACITY_TYPE] = capacity_type
    return {"affinity": placement_affinity(b.privacy_tier, ctx.privacy_zones),
            "tolerations": tolerations(b.privacy_tier, gpu, ctx.privacy_zones) or None,
            "node_selector": selector or None}


def _ray_pod(ctx: SiteContext, b: BatchPipeline, placement: BatchPlacement, share: BatchSitePlacement, *, head: bool,
             capacity_type: str | None) -> dict:
    r = b.resources
    gpus = 0 if head or r.gpu is None else r.gpu.count
    cpu, mem = (b.head.cpu, b.head.memory_gib) if head else (r.cpu, r.memory_gib)
    shm = max(1, min(64, int(mem // 3)))      # Ray's object store lives in /dev/shm (a third of the memory)
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}]
    volumes = [pods.empty_dir("tmp", size_limit="50Gi"), pods.empty_dir("dshm", memory=True, size_limit=f"{shm}Gi")]
    if head and isinstance(b.engine, VllmBatchEngine):
        mounts.append({"name": "batch-script", "mountPath": SCRIPT_MOUNT, "readOnly": True})
        volumes.append({"name": "batch-script", "configMap": {"name": script_name(b), "defaultMode": 0o444}})
    ports = [{"name": "gcs", "containerPort": GCS_PORT, "protocol": "TCP"},
             {"name": "dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"}] if head else None
    c = pods.container("ray-head" if head else "ray-worker", image(ctx, b), env=batch_env(ctx, b, placement, share),
                       ports=ports, res=pods.resources(cpu, mem, gpus), readiness=None, liveness=None, mounts=mounts)
    # the autoscaler sidecar of a recurring pipeline's head scales the workers through the API server, with the service
    # account `objects` renders (named after the cluster; KubeRay binds its Role to it); the head mounts its token
    account = name(b) if head and b.schedule is not None else None
    spec = pods.pod_spec([c], volumes=volumes, priority_class=PRIORITY_BATCH, termination_grace=60, service_account=account,
                         **_scheduling(ctx, b, gpu=gpus > 0, capacity_type=capacity_type))
    return {"metadata": {"labels": _labels(ctx, b, "batch-head" if head else "batch-worker")}, "spec": spec}


def cluster_spec(ctx: SiteContext, b: BatchPipeline, placement: BatchPlacement, share: BatchSitePlacement) -> dict:
    """The RayCluster spec of one site's share: a head, and one worker group per capacity type the plan chose."""
    recurring = b.schedule is not None
    groups = []
    for ctype, n in sorted(share.worker_groups.items()):
        groups.append({
            "groupName": CAPACITY_TYPES[ctype],
            "replicas": 0 if recurring else n, "minReplicas": 0 if recurring else n, "maxReplicas": n,
            "rayStartParams": {},
            "template": _ray_pod(ctx, b, placement, share, head=False, capacity_type=ctype),
        })
    head_type = "on-demand" if ctx.site_kind == "cloud" else None
    spec: dict[str, Any] = {
        "rayVersion": RAY_VERSION,
        "headGroupSpec": {"serviceType": "ClusterIP",
                          # the head runs the driver and no tasks: the plan counted no worker room for it
                          "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                          "template": _ray_pod(ctx, b, placement, share, head=True, capacity_type=head_type)},
        "workerGroupSpecs": groups,
    }
    if recurring:
        res = pods.resources(AUTOSCALER_CPU, AUTOSCALER_MEMORY_GIB)
        spec["enableInTreeAutoscaling"] = True
        spec["autoscalerOptions"] = {"idleTimeoutSeconds": IDLE_TIMEOUT_SECONDS, "upscalingMode": "Default",
                                     "resources": res, "securityContext": pods.container_security_context()}
    return spec


def _submitter(ctx: SiteContext, b: BatchPipeline, *, command: list[str] | None) -> dict:
    """The pod that submits the entrypoint (the RayJob's submitter, or the CronJob's run)."""
    c = pods.container("ray-job-submitter", image(ctx, b), command=command,
                       env=[{"name": "HOME", "value": "/tmp/home"}, {"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}],
                       res=pods.resources(SUBMITTER_CPU, SUBMITTER_MEMORY_GIB), readiness=None, liveness=None,
                       mounts=[{"name": "tmp", "mountPath": "/tmp"}])
    head_type = "on-demand" if ctx.site_kind == "cloud" else None
    spec = pods.pod_spec([c], volumes=[pods.empty_dir("tmp", size_limit="1Gi")], priority_class=PRIORITY_BATCH,
                         **_scheduling(ctx, b, gpu=False, capacity_type=head_type))
    spec["restartPolicy"] = "Never"
    return {"metadata": {"labels": _labels(ctx, b, "batch-submitter")}, "spec": spec}


def _annotations(b: BatchPipeline, placement: BatchPlacement, share: BatchSitePlacement) -> dict[str, str]:
    return {"hybridml.io/batch-items": str(share.items), "hybridml.io/batch-workers": str(share.workers),
            "hybridml.io/batch-window-hours": f"{b.window_hours:g}", "hybridml.io/batch-model": b.model,
            "hybridml.io/batch-planned-items-per-s": f"{placement.planned_items_per_s:g}"}


def objects(ctx: SiteContext, b: BatchPipeline, placement: BatchPlacement, namespace: str) -> list[dict]:
    """Every object of one batch pipeline at one site (the plan's share there)."""
    share = placement.site(ctx.site)
    if share is None:
        raise KeyError(f"batch pipeline {b.name} has no workers at {ctx.site}")
    out: list[dict] = []
    lbls = _labels(ctx, b, "batch")
    if isinstance(b.engine, VllmBatchEngine):
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta.metadata(script_name(b), namespace, lbls),
                    "data": {SCRIPT_FILE: BATCH_SCRIPT}})
    cluster = cluster_spec(ctx, b, placement, share)
    annotations = _annotations(b, placement, share)
    window = math.ceil(b.window_hours * 3600)
    if b.schedule is None:
        out.append({"apiVersion": API_VERSION, "kind": "RayJob",
                    "metadata": meta.metadata(name(b), namespace, lbls, annotations),
                    "spec": {"entrypoint": entrypoint(b), "submissionMode": "K8sJobMode",
                             "shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_SECONDS,
                             "activeDeadlineSeconds": window, "backoffLimit": 0,
                             "submitterPodTemplate": _submitter(ctx, b, command=None), "rayClusterSpec": cluster}})
        return out
    # the head's service account (its autoscaler scales the workers): a head that names one must find it; KubeRay
    # adds the Role and RoleBinding the autoscaler needs
    out.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta.metadata(name(b), namespace, lbls),
                "automountServiceAccountToken": False})
    out.append({"apiVersion": API_VERSION, "kind": "RayCluster",
                "metadata": meta.metadata(name(b), namespace, lbls, annotations), "spec": cluster})
    submit = ["ray", "job", "submit", "--address", f"http://{head_service(b, namespace)}:{DASHBOARD_PORT}", "--",
              *shlex.split(entrypoint(b))]
    job_template = _submitter(ctx, b, command=submit)
    out.append({"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": meta.metadata(submit_name(b), namespace, lbls, annotations),
                "spec": {"schedule": b.schedule, "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid",
                         "startingDeadlineSeconds": 3600, "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                         "jobTemplate": {"metadata": {"labels": lbls},
                                         "spec": {"backoffLimit": 0, "activeDeadlineSeconds": window,
                                                  "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_SECONDS,
                                                  "template": job_template}}}})
    return out


def network_policies(ctx: SiteContext, b: BatchPipeline, namespace: str, operator_namespace: str) -> list[dict]:
    """A batch pipeline's pods talk to each other (Ray's GCS, object manager and workers use many ports), the
    KubeRay operator reads the head's dashboard, and the pods fetch models and read/write datasets over HTTPS
    (object storage, model hub) and reach the API server (the autoscaler). The namespace denies the rest."""
    sel = {"matchLabels": {meta.BATCH_PIPELINE: b.name}}
    lbls = {**meta.labels("network-policy", "network-policy", instance=name(b), site=ctx.site), meta.BATCH_PIPELINE: b.name}
    ns_sel = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}}}
    return [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": meta.metadata(meta.k8s_name("allow-ray", b.name), namespace, lbls),
             "spec": {"podSelector": sel, "policyTypes": ["Ingress", "Egress"],
                      "ingress": [{"from": [{"podSelector": sel}]},
                                  {"from": [ns_sel], "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]}],
                      "egress": [{"to": [{"podSelector": sel}]},
                                 {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                  "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}]}}]
