"""Feature view online store on one site: Redis with Sentinel failover (two data pods with AOF persistence and a
Sentinel each, a Sentinel arbiter pod, one PodDisruptionBudget over the three; `redis_sentinel`), auth from a
derived secret, a Feast FeatureStore whose feature repository is generated from the spec (`feast_repo`) and
mounted from a ConfigMap, and a Flink FlinkDeployment for streaming ingestion. Pure: returns manifests; secret
contents are passed in.

TLS: Redis, Sentinel and Feast speak plain TCP inside the cluster (NetworkPolicies admit only the data clients);
the fleet has no in-cluster certificate issuer yet (cert-manager's CRDs are in shared/crds/more, not deployed),
so TLS for them waits for the certificate plumbing (README, "Feature lookups").
"""
from __future__ import annotations

import json
import math

import yaml

from infra import labels as L
from infra.spec import FeatureView
from workloads.options import AWS_INTERNAL_NLB, METALLB_FLEET
from workloads.render import feast_repo, meta, pods
from workloads.render import redis_sentinel as rs
from workloads.render.context import SiteContext, fleet_service_host, service_fqdn
from workloads.render.data import (
    REDIS_PORT,
    SENTINEL_PORT,
    feast_name,
    fleet_name,
    redis_arbiter,
    redis_name,
    redis_peers,
    sentinel_hosts,
)
from workloads.render.model_pods import placement_affinity, spread, tolerations

REPLICAS = 2          # data pods: primary (ordinal 0 on a cold start) + one replica; Sentinels: these two + the arbiter
EXPORTER_PORT = 9121
FLINK_METRICS_PORT = 9249
AUTH_MOUNT = rs.AUTH_MOUNT
REDIS_GROUP = f"{L.PREFIX}/redis-group"
"""Label on every pod that runs a Sentinel of a view (data pods and arbiter): the PDB and the spread select it."""
FEATURE_REPO_MOUNT = "/opt/hybridml/feature_repo"
"""Where the feature server finds the generated repository (outside the operator's /feast-data)."""
SENTINEL_CPU, SENTINEL_MEMORY_GIB = 0.05, 0.0625


def redis_conf(view: FeatureView, password: str) -> str:
    return rs.redis_conf(view, password)


def auth_files(view: FeatureView, password: str) -> dict[str, str]:
    """Contents of the Redis auth Secret (all files, no env vars)."""
    return {"redis.conf": rs.redis_conf(view, password), "password": password,
            "sentinel.conf": rs.sentinel_conf(password), "sentinel-master.conf": rs.sentinel_master_conf(view, password),
            "exporter-passwords.json": json.dumps({f"redis://localhost:{REDIS_PORT}": password})}


def online_store(view: FeatureView, namespace: str, password: str) -> dict:
    """Feast's `online_store` for the view: Redis through its three Sentinels. The password authenticates to Redis
    and (sentinel_kwargs) to the Sentinels."""
    hosts = ",".join(f"{h}:{SENTINEL_PORT}" for h in sentinel_hosts(view.name, namespace))
    sentinel_auth = json.dumps({"password": password}, separators=(",", ":"))
    return {"type": "redis", "redis_type": "redis_sentinel", "sentinel_master": rs.master_name(view),
            "connection_string": f"{hosts},password={password},sentinel_kwargs={sentinel_auth}",
            "key_ttl_seconds": view.ttl_seconds or None}


def feast_store_secret(view: FeatureView, namespace: str, password: str) -> str:
    """Feast online store parameters (feature_store.yaml `online_store` body) for the operator's secret."""
    body = {k: v for k, v in online_store(view, namespace, password).items() if k != "type" and v is not None}
    return str(yaml.safe_dump(body, sort_keys=False))


def auth_secret_name(view: FeatureView) -> str:
    return meta.k8s_name(redis_name(view.name), "auth")


def feast_secret_name(view: FeatureView) -> str:
    return meta.k8s_name("feast", view.name, "store")


def feast_repo_name(view: FeatureView) -> str:
    return meta.k8s_name("feast", view.name, "repo")


def _labels(ctx: SiteContext, view: FeatureView, app: str, component: str, image: str, instance: str | None = None) -> dict:
    out = meta.labels(app, component, instance=instance or meta.k8s_name(app, view.name), version=meta.image_version(image),
                      site=ctx.site, tier=view.privacy_tier.value)
    out[meta.FEATURE_VIEW] = view.name
    return out


def _sentinel(ctx: SiteContext, view: FeatureView, self_name: str, namespace: str, first: str) -> dict:
    script = rs.sentinel_start(view, self_name, sentinel_hosts(view.name, namespace), first)
    ping = ["sh", "-c", f'redis-cli --no-auth-warning -a "$(cat {AUTH_MOUNT}/password)" -p {SENTINEL_PORT} ping | grep -q PONG']
    return pods.container(
        "sentinel", ctx.images.redis, command=["sh", "-c"], args=[script],
        ports=[{"name": "sentinel", "containerPort": SENTINEL_PORT, "protocol": "TCP"}],
        res=pods.resources(SENTINEL_CPU, SENTINEL_MEMORY_GIB),
        readiness=pods.exec_probe(ping, period=5), liveness=pods.tcp_probe("sentinel", period=15, failures=4),
        mounts=[{"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True}, {"name": "sentinel-tmp", "mountPath": rs.WORK_DIR}])


def redis_objects(ctx: SiteContext, view: FeatureView, namespace: str, *, fleet_sources: list[str]) -> list[dict]:
    name, peers, arbiter = redis_name(view.name), redis_peers(view.name), redis_arbiter(view.name)
    lbls = _labels(ctx, view, "redis", "online-store", ctx.images.redis)
    lbls[REDIS_GROUP] = name
    sel = meta.selector(lbls)
    group = {REDIS_GROUP: name}
    mem = view.online_memory_gib
    disk = int(math.ceil(mem * 2 + 1))
    hosts = sentinel_hosts(view.name, namespace)
    first = hosts[0]
    start = rs.redis_start(view, hosts[:REPLICAS], hosts, first)
    ping = ["sh", "-c", f'redis-cli --no-auth-warning -a "$(cat {AUTH_MOUNT}/password)" ping | grep -q PONG']
    auth_volume = {"name": "auth", "secret": {"secretName": auth_secret_name(view), "defaultMode": 0o440}}
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
    sentinel = _sentinel(ctx, view, f"$HOSTNAME.{service_fqdn(peers, namespace)}", namespace, first)
    claim: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": f"{disk}Gi"}}}
    if ctx.storage_class:
        claim["storageClassName"] = ctx.storage_class
    affinity = placement_affinity(view.privacy_tier.value, ctx.privacy_zones)
    tols = tolerations(view.privacy_tier.value, False, ctx.privacy_zones) or None
    spec = pods.pod_spec([redis, exporter, sentinel], volumes=[
        auth_volume, pods.empty_dir("tmp", size_limit="256Mi"), pods.empty_dir("sentinel-tmp", size_limit="16Mi")],
        affinity=affinity, tolerations=tols, spread=spread(ctx.site_kind, sel, 1, hard=True), termination_grace=60)
    # The arbiter: a third Sentinel, preferably on a node (and zone or rack) of its own, so that losing the
    # primary's node leaves two of three Sentinels to elect the replica.
    a_lbls = {**_labels(ctx, view, "redis", "online-store", ctx.images.redis, instance=arbiter), REDIS_GROUP: name}
    a_sel = meta.selector(a_lbls)
    a_affinity = {**affinity, "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": sel}, "topologyKey": L.HOSTNAME}}]}}
    a_spec = pods.pod_spec([_sentinel(ctx, view, service_fqdn(arbiter, namespace), namespace, first)],
                           volumes=[auth_volume, pods.empty_dir("sentinel-tmp", size_limit="16Mi")],
                           affinity=a_affinity, tolerations=tols, spread=spread(ctx.site_kind, group, 1, hard=False),
                           termination_grace=30)
    redis_port = [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}]
    sentinel_port = [{"name": "sentinel", "port": SENTINEL_PORT, "targetPort": "sentinel", "protocol": "TCP"}]
    out = [
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta.metadata(name, namespace, lbls),
         "spec": {"replicas": REPLICAS, "serviceName": peers, "selector": {"matchLabels": sel},
                  "podManagementPolicy": "OrderedReady", "updateStrategy": {"type": "RollingUpdate"},
                  "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"},
                  "template": {"metadata": {"labels": lbls}, "spec": spec},
                  "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": sel}, "spec": claim}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(peers, namespace, lbls),
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": sel,
                  "ports": redis_port + sentinel_port}},
        # Readers (pipelines) may use any data pod; writers (Feast materialization, Flink) ask the Sentinels.
        {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(name, namespace, lbls),
         "spec": {"type": "ClusterIP", "selector": sel, "ports": redis_port}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta.metadata(arbiter, namespace, a_lbls),
         "spec": {"replicas": 1, "selector": {"matchLabels": a_sel}, "strategy": {"type": "Recreate"},
                  "template": {"metadata": {"labels": a_lbls}, "spec": a_spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(arbiter, namespace, a_lbls),
         "spec": {"type": "ClusterIP", "selector": a_sel, "ports": sentinel_port}},
        # One budget over all three Sentinel pods (a pod under two budgets cannot be evicted at all): a drain
        # takes at most one of primary, replica and arbiter at a time, so data and quorum both survive it.
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta.metadata(name, namespace, lbls),
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": group}}},
    ]
    if fleet_sources:
        out.append(fleet_service(ctx, fleet_name(name), namespace, lbls, sel, redis_port, fleet_sources))
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


def feast_repo_files(ctx: SiteContext, view: FeatureView, namespace: str) -> dict[str, str]:
    """The view's generated feature repository. Its feature_store.yaml reads the Redis password from
    $HYBRIDML_REDIS_PASSWORD (Feast expands variables), so the ConfigMap holds no secret; the operator stages the
    repository with a feature_store.yaml of its own, built from the FeatureStore and its online-store Secret."""
    return feast_repo.repo_files(view, ctx.env_name, online_store(view, namespace, "${HYBRIDML_REDIS_PASSWORD}"))


def feast_repo_object(ctx: SiteContext, view: FeatureView, namespace: str) -> dict:
    lbls = _labels(ctx, view, "feast", "feature-server", ctx.images.feast)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta.metadata(feast_repo_name(view), namespace, lbls),
            "data": feast_repo_files(ctx, view, namespace)}


def feast_object(ctx: SiteContext, view: FeatureView, namespace: str) -> dict:
    """The FeatureStore: a `packaged` feature repository at FEATURE_REPO_MOUNT, where the repository ConfigMap is
    mounted (the operator has no ConfigMap source for a repository; `packaged` reads a path, and the init
    container stages it and runs `feast apply` before the server starts)."""
    lbls = _labels(ctx, view, "feast", "feature-server", ctx.images.feast)
    return {
        "apiVersion": "feast.dev/v1", "kind": "FeatureStore",
        "metadata": meta.metadata(feast_name(view.name), namespace, lbls),
        "spec": {
            "feastProject": feast_repo.project(view.name),
            "feastProjectDir": {"packaged": {"image": ctx.images.feast, "featureRepoPath": FEATURE_REPO_MOUNT}},
            "services": {
                "securityContext": pods.pod_security_context(),
                "volumes": [{"name": "feature-repo", "configMap": {"name": feast_repo_name(view), "defaultMode": 0o444}}],
                "onlineStore": {
                    "persistence": {"store": {"type": "redis", "secretRef": {"name": feast_secret_name(view)},
                                              "secretKeyName": "redis"}},
                    "server": {"image": ctx.images.feast, "metrics": True, "logLevel": "info",
                               "resources": pods.resources(1, 2),
                               "volumeMounts": [{"name": "feature-repo", "mountPath": FEATURE_REPO_MOUNT, "readOnly": True}]},
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
                          "--redis-sentinels", ",".join(f"{h}:{SENTINEL_PORT}" for h in sentinel_hosts(view.name, namespace)),
                          "--redis-sentinel-master", rs.master_name(view),
                          "--redis-password-file", f"{AUTH_MOUNT}/password",
                          "--ttl-seconds", str(view.ttl_seconds)],
                 "parallelism": 2,
                 "upgradeMode": "savepoint",
                 "state": "running",
             },
         }},
    ]
