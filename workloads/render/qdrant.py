"""Qdrant vector database for one collection on one site: StatefulSet (cluster mode when replicated) with
storage and snapshot volumes, Services, PDB, a Job that creates the collection from the spec and a
CronJob that snapshots it. Pure: returns manifests."""
from __future__ import annotations

import json
import math

from infra.spec import VectorCollection
from workloads.render import meta, pods
from workloads.render.context import SiteContext
from workloads.render.data import QDRANT_GRPC, QDRANT_HTTP, QDRANT_P2P, fleet_name, qdrant_name
from workloads.render.feature_store import fleet_service
from workloads.render.model_pods import placement_affinity, spread, tolerations

AUTH_MOUNT = "/qdrant/secret"


def auth_files(api_key: str) -> dict[str, str]:
    return {"config.yaml": f"service:\n  api_key: {json.dumps(api_key)}\n",
            "api-key": api_key,
            "curl-headers": f"api-key: {api_key}\n"}


def auth_secret_name(c: VectorCollection) -> str:
    return meta.k8s_name(qdrant_name(c.name), "auth")


def collection_body(c: VectorCollection) -> dict:
    return {"vectors": {"size": c.dimensions, "distance": c.distance}, "shard_number": c.shards,
            "replication_factor": c.replication_factor, "write_consistency_factor": 1}


def _labels(ctx: SiteContext, c: VectorCollection, component: str, image: str) -> dict:
    out = meta.labels("qdrant", component, instance=qdrant_name(c.name), version=meta.image_version(image),
                      site=ctx.site, tier=c.privacy_tier.value)
    out[meta.COLLECTION] = c.name
    return out


def _curl_job_spec(ctx: SiteContext, c: VectorCollection, lbls: dict, script: str) -> dict:
    container = pods.container(
        "curl", ctx.images.curl, command=["/bin/sh", "-c"], args=[script], res=pods.resources(0.1, 0.125),
        readiness=None, liveness=None,
        mounts=[{"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}])
    spec = pods.pod_spec([container], volumes=[
        {"name": "auth", "secret": {"secretName": auth_secret_name(c), "defaultMode": 0o440}},
        pods.empty_dir("tmp", size_limit="64Mi")],
        affinity=placement_affinity(c.privacy_tier.value, ctx.privacy_zones), tolerations=tolerations(c.privacy_tier.value, False, ctx.privacy_zones) or None)
    spec["restartPolicy"] = "OnFailure"
    return {"metadata": {"labels": lbls}, "spec": spec}


def objects(ctx: SiteContext, c: VectorCollection, namespace: str, *, fleet_sources: list[str]) -> list[dict]:
    name = qdrant_name(c.name)
    peers = f"{name}-peers"
    lbls = _labels(ctx, c, "vector-db", ctx.images.qdrant)
    sel = meta.selector(lbls)
    n = c.replication_factor
    base = f"/qdrant/qdrant --config-path {AUTH_MOUNT}/config.yaml"
    if n > 1:
        start = (f'URI="http://${{HOSTNAME}}.{peers}:{QDRANT_P2P}"; '
                 f'if [ "${{HOSTNAME##*-}}" = "0" ]; then exec {base} --uri "$URI"; '
                 f'else exec {base} --uri "$URI" --bootstrap "http://{name}-0.{peers}:{QDRANT_P2P}"; fi')
    else:
        start = f"exec {base}"
    env = [{"name": "QDRANT__CLUSTER__ENABLED", "value": "true" if n > 1 else "false"},
           {"name": "QDRANT__CLUSTER__P2P__PORT", "value": str(QDRANT_P2P)},
           {"name": "QDRANT__STORAGE__STORAGE_PATH", "value": "/qdrant/storage"},
           {"name": "QDRANT__STORAGE__SNAPSHOTS_PATH", "value": "/qdrant/snapshots"},
           {"name": "QDRANT__STORAGE__TEMP_PATH", "value": "/tmp"},
           {"name": "QDRANT_INIT_FILE_PATH", "value": "/qdrant/storage/.qdrant-initialized"},
           {"name": "QDRANT__TELEMETRY_DISABLED", "value": "true"}]
    container = pods.container(
        "qdrant", ctx.images.qdrant, command=["/bin/bash", "-c"], args=[start], env=env,
        ports=[{"name": "http", "containerPort": QDRANT_HTTP, "protocol": "TCP"},
               {"name": "grpc", "containerPort": QDRANT_GRPC, "protocol": "TCP"},
               {"name": "p2p", "containerPort": QDRANT_P2P, "protocol": "TCP"}],
        res=pods.resources(c.cpu, c.memory_gib),
        startup=pods.http_probe("/readyz", "http", period=5, failures=120),
        readiness=pods.http_probe("/readyz", "http", period=5), liveness=pods.http_probe("/livez", "http", period=15),
        mounts=[{"name": "storage", "mountPath": "/qdrant/storage"},
                {"name": "snapshots", "mountPath": "/qdrant/snapshots"},
                {"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"}])
    spec = pods.pod_spec([container], volumes=[
        {"name": "auth", "secret": {"secretName": auth_secret_name(c), "defaultMode": 0o440}},
        pods.empty_dir("tmp", size_limit="4Gi")],
        affinity=placement_affinity(c.privacy_tier.value, ctx.privacy_zones), tolerations=tolerations(c.privacy_tier.value, False, ctx.privacy_zones) or None,
        spread=spread(ctx.site_kind, sel, 1, hard=True), termination_grace=60)

    def claim(gib: int) -> dict:
        out: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": f"{gib}Gi"}}}
        if ctx.storage_class:
            out["storageClassName"] = ctx.storage_class
        return out

    storage = int(math.ceil(c.memory_gib * 4))
    snapshots = int(math.ceil(c.memory_gib * 2))
    hdr = f"-H @{AUTH_MOUNT}/curl-headers"
    svc = f"http://{name}:{QDRANT_HTTP}"
    body = json.dumps(collection_body(c), sort_keys=True)
    create = (f'set -eu; until curl -fsS {svc}/readyz >/dev/null; do sleep 5; done; '
              f'code=$(curl -s -o /dev/null -w "%{{http_code}}" {hdr} {svc}/collections/{c.name}); '
              f'if [ "$code" = "200" ]; then echo "collection {c.name} exists"; exit 0; fi; '
              f"curl -fsS -X PUT {hdr} -H 'Content-Type: application/json' {svc}/collections/{c.name} "
              f"-d '{body}'")
    snap = (f'set -eu; for i in $(seq 0 {n - 1}); do '
            f'curl -fsS -X POST {hdr} "http://{name}-$i.{peers}:{QDRANT_HTTP}/collections/{c.name}/snapshots?wait=true"; '
            f'done')
    job_lbls = _labels(ctx, c, "maintenance", ctx.images.curl)
    out = [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta.metadata(name, namespace, lbls),
         "spec": {"replicas": n, "serviceName": peers, "selector": {"matchLabels": sel},
                  "podManagementPolicy": "OrderedReady", "updateStrategy": {"type": "RollingUpdate"},
                  "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                  "template": {"metadata": {"labels": lbls}, "spec": spec},
                  "volumeClaimTemplates": [{"metadata": {"name": "storage", "labels": sel}, "spec": claim(storage)},
                                           {"metadata": {"name": "snapshots", "labels": sel}, "spec": claim(snapshots)}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(peers, namespace, lbls),
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": sel,
                  "ports": [{"name": "p2p", "port": QDRANT_P2P, "targetPort": "p2p", "protocol": "TCP"},
                            {"name": "http", "port": QDRANT_HTTP, "targetPort": "http", "protocol": "TCP"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(name, namespace, lbls),
         "spec": {"type": "ClusterIP", "selector": sel,
                  "ports": [{"name": "http", "port": QDRANT_HTTP, "targetPort": "http", "protocol": "TCP"},
                            {"name": "grpc", "port": QDRANT_GRPC, "targetPort": "grpc", "protocol": "TCP",
                             "appProtocol": "grpc"}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta.metadata(name, namespace, lbls),
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": sel}}},
        {"apiVersion": "batch/v1", "kind": "Job",
         "metadata": meta.metadata(meta.k8s_name(name, "collection"), namespace, job_lbls),
         "spec": {"backoffLimit": 20, "activeDeadlineSeconds": 3600, "template": _curl_job_spec(ctx, c, job_lbls, create)}},
        {"apiVersion": "batch/v1", "kind": "CronJob",
         "metadata": meta.metadata(meta.k8s_name(name, "snapshot"), namespace, job_lbls),
         "spec": {"schedule": "17 2 * * *", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3,
                  "failedJobsHistoryLimit": 3, "startingDeadlineSeconds": 3600,
                  "jobTemplate": {"spec": {"backoffLimit": 3, "activeDeadlineSeconds": 3600,
                                           "template": _curl_job_spec(ctx, c, job_lbls, snap)}}}},
    ]
    if fleet_sources:
        out.append(fleet_service(ctx, fleet_name(name), namespace, lbls, sel,
                                 [{"name": "http", "port": QDRANT_HTTP, "targetPort": "http", "protocol": "TCP"}],
                                 fleet_sources))
    return out
