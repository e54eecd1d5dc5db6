"""Qdrant vector database for one collection on one site: StatefulSet (cluster mode when replicated) with
storage and snapshot volumes, Services, PDB, a Job that creates the collection from the spec and a
CronJob that snapshots it. Pure: returns manifests.

TLS (workloads/render/certificates.py): REST, gRPC and the peers' P2P port serve TLS with the collection's
Certificate from the fleet issuer (`QDRANT__SERVICE__ENABLE_TLS`, `QDRANT__CLUSTER__P2P__ENABLE_TLS`, in the pod
spec where rule `data-path-tls` reads them); the certificate files are re-read hourly (`cert_ttl`), so a renewal
needs no restart. Clients (the jobs here, pipelines, Prometheus) verify it against the fleet CA."""
from __future__ import annotations

import json
import math

from infra.spec import VectorCollection
from workloads.render import meta, pods
from workloads.render.certificates import certificate, tls_secret_name
from workloads.render.context import SiteContext, fleet_service_host, service_fqdn
from workloads.render.data import QDRANT_GRPC, QDRANT_HTTP, QDRANT_P2P, fleet_name, qdrant_name
from workloads.render.feature_store import fleet_service
from workloads.render.model_pods import placement_affinity, spread, tolerations

AUTH_MOUNT = "/qdrant/secret"
TLS_MOUNT = "/qdrant/tls"
CERT_TTL_S = 3600


def tls_env(mount: str = TLS_MOUNT) -> list[dict]:
    """Qdrant's TLS settings: REST and gRPC over TLS, P2P between peers over TLS, the certificate re-read hourly."""
    return [{"name": "QDRANT__SERVICE__ENABLE_TLS", "value": "true"},
            {"name": "QDRANT__CLUSTER__P2P__ENABLE_TLS", "value": "true"},
            {"name": "QDRANT__TLS__CERT", "value": f"{mount}/tls.crt"},
            {"name": "QDRANT__TLS__KEY", "value": f"{mount}/tls.key"},
            {"name": "QDRANT__TLS__CA_CERT", "value": f"{mount}/ca.crt"},
            {"name": "QDRANT__TLS__CERT_TTL", "value": str(CERT_TTL_S)}]


def tls_secret(c: VectorCollection) -> str:
    return tls_secret_name(qdrant_name(c.name))


def dns_names(ctx: SiteContext, c: VectorCollection, namespace: str) -> list[str]:
    """The Service (short and full), every peer by its headless name, the fleet load balancer, localhost."""
    name = qdrant_name(c.name)
    peers = f"{name}-peers"
    pods = [f"{name}-{i}.{peers}" for i in range(c.replication_factor)]
    return [name, service_fqdn(name, namespace), *pods, *(f"{p}.{namespace}.svc.cluster.local" for p in pods),
            fleet_service_host(fleet_name(name), namespace, ctx.site, ctx.domain), "localhost"]


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
        mounts=[{"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True},
                {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True}, {"name": "tmp", "mountPath": "/tmp"}])
    spec = pods.pod_spec([container], volumes=[
        {"name": "auth", "secret": {"secretName": auth_secret_name(c), "defaultMode": 0o440}},
        {"name": "tls", "secret": {"secretName": tls_secret(c), "defaultMode": 0o440,
                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        pods.empty_dir("tmp", size_limit="64Mi")],
        affinity=placement_affinity(c.privacy_tier.value, ctx.privacy_zones), tolerations=tolerations(c.privacy_tier.value, False, ctx.privacy_zones) or None)
    spec["restartPolicy"] = "OnFailure"
    return {"metadata": {"labels": lbls}, "spec": spec}


def _https(probe: dict) -> dict:
    """An HTTP probe over TLS (the kubelet does not verify the certificate; it only needs the handshake)."""
    return {**probe, "httpGet": {**probe["httpGet"], "scheme": "HTTPS"}}


def objects(ctx: SiteContext, c: VectorCollection, namespace: str, *, fleet_sources: list[str]) -> list[dict]:
    name = qdrant_name(c.name)
    peers = f"{name}-peers"
    lbls = _labels(ctx, c, "vector-db", ctx.images.qdrant)
    sel = meta.selector(lbls)
    n = c.replication_factor
    base = f"/qdrant/qdrant --config-path {AUTH_MOUNT}/config.yaml"
    if n > 1:
        start = (f'URI="https://${{HOSTNAME}}.{peers}:{QDRANT_P2P}"; '
                 f'if [ "${{HOSTNAME##*-}}" = "0" ]; then exec {base} --uri "$URI"; '
                 f'else exec {base} --uri "$URI" --bootstrap "https://{name}-0.{peers}:{QDRANT_P2P}"; fi')
    else:
        start = f"exec {base}"
    env = [{"name": "QDRANT__CLUSTER__ENABLED", "value": "true" if n > 1 else "false"},
           {"name": "QDRANT__CLUSTER__P2P__PORT", "value": str(QDRANT_P2P)},
           {"name": "QDRANT__STORAGE__STORAGE_PATH", "value": "/qdrant/storage"},
           {"name": "QDRANT__STORAGE__SNAPSHOTS_PATH", "value": "/qdrant/snapshots"},
           {"name": "QDRANT__STORAGE__TEMP_PATH", "value": "/tmp"},
           {"name": "QDRANT_INIT_FILE_PATH", "value": "/qdrant/storage/.qdrant-initialized"},
           {"name": "QDRANT__TELEMETRY_DISABLED", "value": "true"}, *tls_env()]
    container = pods.container(
        "qdrant", ctx.images.qdrant, command=["/bin/bash", "-c"], args=[start], env=env,
        ports=[{"name": "http", "containerPort": QDRANT_HTTP, "protocol": "TCP"},
               {"name": "grpc", "containerPort": QDRANT_GRPC, "protocol": "TCP"},
               {"name": "p2p", "containerPort": QDRANT_P2P, "protocol": "TCP"}],
        res=pods.resources(c.cpu, c.memory_gib),
        startup=_https(pods.http_probe("/readyz", "http", period=5, failures=120)),
        readiness=_https(pods.http_probe("/readyz", "http", period=5)),
        liveness=_https(pods.http_probe("/livez", "http", period=15)),
        mounts=[{"name": "storage", "mountPath": "/qdrant/storage"},
                {"name": "snapshots", "mountPath": "/qdrant/snapshots"},
                {"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True},
                {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"}])
    spec = pods.pod_spec([container], volumes=[
        {"name": "auth", "secret": {"secretName": auth_secret_name(c), "defaultMode": 0o440}},
        {"name": "tls", "secret": {"secretName": tls_secret(c), "defaultMode": 0o440}},
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
    hdr = f"--cacert {TLS_MOUNT}/ca.crt -H @{AUTH_MOUNT}/curl-headers"
    svc = f"https://{name}:{QDRANT_HTTP}"
    body = json.dumps(collection_body(c), sort_keys=True)
    create = (f'set -eu; until curl -fsS --cacert {TLS_MOUNT}/ca.crt {svc}/readyz >/dev/null; do sleep 5; done; '
              f'code=$(curl -s -o /dev/null -w "%{{http_code}}" {hdr} {svc}/collections/{c.name}); '
              f'if [ "$code" = "200" ]; then echo "collection {c.name} exists"; exit 0; fi; '
              f"curl -fsS -X PUT {hdr} -H 'Content-Type: application/json' {svc}/collections/{c.name} "
              f"-d '{body}'")
    snap = (f'set -eu; for i in $(seq 0 {n - 1}); do '
            f'curl -fsS -X POST {hdr} "https://{name}-$i.{peers}:{QDRANT_HTTP}/collections/{c.name}/snapshots?wait=true"; '
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
    out.append(certificate(tls_secret(c), namespace, lbls, secret_name=tls_secret(c), dns_names=dns_names(ctx, c, namespace),
                           issuer=ctx.cert_issuer))
    if fleet_sources:
        out.append(fleet_service(ctx, fleet_name(name), namespace, lbls, sel,
                                 [{"name": "http", "port": QDRANT_HTTP, "targetPort": "http", "protocol": "TCP"}],
                                 fleet_sources))
    return out
