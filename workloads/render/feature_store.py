"""Feature view online store on one site: Redis (primary + replica StatefulSet with AOF persistence, PDB,
auth from a derived secret), a Feast FeatureStore pointing at it, and a Flink FlinkDeployment for
streaming ingestion. Pure: returns manifests; secret contents are passed in."""
from __future__ import annotations

import json
import math

from infra.spec import FeatureView
from workloads.options import AWS_INTERNAL_NLB, METALLB_FLEET
from workloads.render import meta, pods
from workloads.render.context import SiteContext, fleet_service_host, service_fqdn
from workloads.render.data import REDIS_PORT, feast_name, fleet_name, redis_name
from workloads.render.model_pods import placement_affinity, spread, tolerations

REPLICAS = 2          # primary (ordinal 0) + one replica
EXPORTER_PORT = 9121
FLINK_METRICS_PORT = 9249
AUTH_MOUNT = "/etc/redis/auth"


def redis_conf(view: FeatureView, password: str) -> str:
    mem_mb = int(view.online_memory_gib * 1024)
    return "\n".join([
        "bind 0.0.0.0", f"port {REDIS_PORT}", "protected-mode yes", "dir /data",
        f"requirepass {password}", f"masterauth {password}",
        f"maxmemory {mem_mb}mb", "maxmemory-policy volatile-ttl",
        "appendonly yes", "appendfsync everysec", "save 900 1 300 100",
        "replica-read-only yes", "rename-command FLUSHALL \"\"", "rename-command CONFIG \"\"", ""])


def auth_files(view: FeatureView, password: str) -> dict[str, str]:
    """Contents of the Redis auth Secret (all files, no env vars)."""
    return {"redis.conf": redis_conf(view, password), "password": password,
            "exporter-passwords.json": json.dumps({f"redis://localhost:{REDIS_PORT}": password})}


def feast_store_secret(view: FeatureView, namespace: str, password: str) -> str:
    """Feast online store parameters (feature_store.yaml `online_store` body) for the operator's secret."""
    host = service_fqdn(redis_name(view.name), namespace)
    return f"connection_string: \"{host}:{REDIS_PORT},password={password}\"\nkey_ttl_seconds: {view.ttl_seconds}\n"


def auth_secret_name(view: FeatureView) -> str:
    return meta.k8s_name(redis_name(view.name), "auth")


def feast_secret_name(view: FeatureView) -> str:
    return meta.k8s_name("feast", view.name, "store")


def _labels(ctx: SiteContext, view: FeatureView, app: str, component: str, image: str) -> dict:
    out = meta.labels(app, component, instance=meta.k8s_name(app, view.name), version=meta.image_version(image),
                      site=ctx.site, tier=view.privacy_tier.value)
    out[meta.FEATURE_VIEW] = view.name
    return out


def redis_objects(ctx: SiteContext, view: FeatureView, namespace: str, *, fleet_sources: list[str]) -> list[dict]:
    name = redis_name(view.name)
    peers = f"{name}-peers"
    lbls = _labels(ctx, view, "redis", "online-store", ctx.images.redis)
    sel = meta.selector(lbls)
    mem = view.online_memory_gib
    disk = int(math.ceil(mem * 2 + 1))
    start = (f'if [ "${{HOSTNAME##*-}}" = "0" ]; then exec redis-server {AUTH_MOUNT}/redis.conf; '
             f'else exec redis-server {AUTH_MOUNT}/redis.conf --replicaof {name}-0.{peers} {REDIS_PORT}; fi')
    ping = ["sh", "-c", f'redis-cli --no-auth-warning -a "$(cat {AUTH_MOUNT}/password)" ping | grep -q PONG']
    redis = pods.container(
        "redis", ctx.images.redis, command=["sh", "-c"], args=[start],
        ports=[{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        res=pods.resources(view.online_cpu, mem * 1.25 + 0.25),
        readiness=pods.exec_probe(ping, period=5), liveness=pods.tcp_probe("redis", period=15, failures=4),
        mounts=[{"name": "data", "mountPath": "/data"}, {"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"}])
    exporter = pods.container(
        "exporter", ctx.images.redis_exporter,
        args=[f"--redis.addr=redis://localhost:{REDIS_PORT}", f"--redis.password-file={AUTH_MOUNT}/exporter-passwords.json"],
        ports=[{"name": "metrics", "containerPort": EXPORTER_PORT, "protocol": "TCP"}],
        res=pods.resources(0.1, 0.125),
        readiness=pods.http_probe("/health", "metrics", period=10), liveness=pods.http_probe("/health", "metrics", period=30),
        mounts=[{"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True}])
    claim: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": f"{disk}Gi"}}}
    if ctx.storage_class:
        claim["storageClassName"] = ctx.storage_class
    spec = pods.pod_spec([redis, exporter], volumes=[
        {"name": "auth", "secret": {"secretName": auth_secret_name(view), "defaultMode": 0o440}},
        pods.empty_dir("tmp", size_limit="256Mi")],
        affinity=placement_affinity(view.privacy_tier.value, ctx.privacy_zones),
        tolerations=tolerations(view.privacy_tier.value, False, ctx.privacy_zones) or None,
        spread=spread(ctx.site_kind, sel, 1, hard=True), termination_grace=60)
    out = [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta.metadata(name, namespace, lbls),
         "spec": {"replicas": REPLICAS, "serviceName": peers, "selector": {"matchLabels": sel},
                  "podManagementPolicy": "OrderedReady", "updateStrategy": {"type": "RollingUpdate"},
                  "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"},
                  "template": {"metadata": {"labels": lbls}, "spec": spec},
                  "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": sel}, "spec": claim}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(peers, namespace, lbls),
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": sel,
                  "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}]}},
        # Clients (Feast, Flink, pipelines) talk to the primary only.
        {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(name, namespace, lbls),
         "spec": {"type": "ClusterIP", "selector": {**sel, "statefulset.kubernetes.io/pod-name": f"{name}-0"},
                  "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}]}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta.metadata(name, namespace, lbls),
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": sel}}},
    ]
    if fleet_sources:
        out.append(fleet_service(ctx, fleet_name(name), namespace, lbls,
                                 {**sel, "statefulset.kubernetes.io/pod-name": f"{name}-0"},
                                 [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}],
                                 fleet_sources))
    return out


def fleet_service(ctx: SiteContext, name: str, namespace: str, lbls: dict, sel: dict, ports: list[dict],
                  sources: list[str], annotations: dict | None = None) -> dict:
    """Internal load balancer for readers on other sites (never internet-facing; source ranges limited)."""
    ann = dict(AWS_INTERNAL_NLB if ctx.site_kind == "cloud" else METALLB_FLEET)
    ann.update(annotations or {})
    ann["external-dns.alpha.kubernetes.io/hostname"] = fleet_service_host(name, namespace, ctx.site, ctx.domain)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(name, namespace, lbls, ann),
            "spec": {"type": "LoadBalancer", "selector": sel, "ports": ports, "externalTrafficPolicy": "Local",
                     "loadBalancerSourceRanges": sorted(sources)}}


def feast_object(ctx: SiteContext, view: FeatureView, namespace: str) -> dict:
    lbls = _labels(ctx, view, "feast", "feature-server", ctx.images.feast)
    return {
        "apiVersion": "feast.dev/v1", "kind": "FeatureStore",
        "metadata": meta.metadata(feast_name(view.name), namespace, lbls),
        "spec": {
            "feastProject": view.name.replace("-", "_"),
            "services": {
                "securityContext": pods.pod_security_context(),
                "onlineStore": {
                    "persistence": {"store": {"type": "redis", "secretRef": {"name": feast_secret_name(view)},
                                              "secretKeyName": "redis"}},
                    "server": {"image": ctx.images.feast, "metrics": True, "logLevel": "info",
                               "resources": pods.resources(1, 2)},
                },
            },
        },
    }


def flink_objects(ctx: SiteContext, view: FeatureView, namespace: str) -> list[dict]:
    """Streaming ingestion: a Flink application job writing the view's features into Redis."""
    name = meta.k8s_name("ingest", view.name, limit=45)
    lbls = _labels(ctx, view, "flink", "stream-processor", ctx.images.feature_ingest)
    sa = name
    state = f"{ctx.flink_state_uri}/{ctx.env_name}/{ctx.site}/{view.name}"
    container = {
        "name": "flink-main-container",
        # Flink rewrites its configuration directory at start: writable root filesystem (documented
        # exemption READ_ONLY_ROOT_EXEMPT["flink"]); everything else of `restricted` holds.
        "securityContext": {**pods.container_security_context(), "readOnlyRootFilesystem": False},
        "ports": [{"name": "metrics", "containerPort": FLINK_METRICS_PORT, "protocol": "TCP"}],
        "volumeMounts": [{"name": "redis-auth", "mountPath": AUTH_MOUNT, "readOnly": True}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta.metadata(sa, namespace, lbls),
         "automountServiceAccountToken": True},
        # The JobManager creates and deletes its TaskManager pods (Flink native Kubernetes mode).
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta.metadata(sa, namespace, lbls),
         "rules": [{"apiGroups": [""], "resources": ["pods", "configmaps", "services"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                   {"apiGroups": ["apps"], "resources": ["deployments"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": meta.metadata(sa, namespace, lbls),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
         "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]},
        {"apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment",
         "metadata": meta.metadata(name, namespace, lbls),
         "spec": {
             "image": ctx.images.feature_ingest,
             "imagePullPolicy": "Always",
             "flinkVersion": "v1_20",
             "serviceAccount": sa,
             "mode": "native",
             "flinkConfiguration": {
                 "taskmanager.numberOfTaskSlots": "2",
                 "state.backend.type": "rocksdb",
                 "execution.checkpointing.interval": "60s",
                 "execution.checkpointing.dir": f"{state}/checkpoints",
                 "execution.checkpointing.savepoint-dir": f"{state}/savepoints",
                 "high-availability.type": "kubernetes",
                 "high-availability.storageDir": f"{state}/ha",
                 "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
                 "metrics.reporter.prom.port": str(FLINK_METRICS_PORT),
             },
             "podTemplate": {
                 "metadata": {"labels": lbls},
                 "spec": {
                     "securityContext": pods.pod_security_context(),
                     "affinity": placement_affinity(view.privacy_tier.value, ctx.privacy_zones),
                     "tolerations": tolerations(view.privacy_tier.value, False, ctx.privacy_zones),
                     "containers": [container],
                     "volumes": [{"name": "redis-auth",
                                  "secret": {"secretName": auth_secret_name(view), "defaultMode": 0o440,
                                             "items": [{"key": "password", "path": "password"}]}}],
                 },
             },
             "jobManager": {"replicas": 1, "resource": {"cpu": 1, "memory": "2048m"}},
             "taskManager": {"resource": {"cpu": max(1.0, view.online_cpu), "memory": "4096m"}},
             "job": {
                 "jarURI": "local:///opt/flink/usrlib/feature-ingest.jar",
                 "entryClass": "io.hybridml.ingest.FeatureViewIngest",
                 "args": ["--feature-view", view.name,
                          "--redis", f"{service_fqdn(redis_name(view.name), namespace)}:{REDIS_PORT}",
                          "--redis-password-file", f"{AUTH_MOUNT}/password",
                          "--ttl-seconds", str(view.ttl_seconds)],
                 "parallelism": 2,
                 "upgradeMode": "savepoint",
                 "state": "running",
             },
         }},
    ]
