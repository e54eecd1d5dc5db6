"""Feature view online store on one site: Redis with Sentinel failover (two data pods with AOF persistence and a
Sentinel each, a Sentinel arbiter pod, one PodDisruptionBudget over the three; `redis_sentinel`), auth from a
derived secret, a Feast FeatureStore whose feature repository is generated from the spec (`feast_repo`) and
mounted from a ConfigMap, and a Flink FlinkDeployment for streaming ingestion (`flink`). Pure: returns manifests;
secret contents are passed in.

TLS everywhere (workloads/render/certificates.py): Redis and its Sentinels serve TLS only, with the view's
Certificate from the fleet issuer (`redis_certificate`); Redis asks every client for a certificate of the same CA.
Feast reaches them over TLS (`online_store`: `ssl=true` and the certificate files) and serves TLS itself
(`server.tls`, `feast_certificate`); the exporter, the probes and the Flink job use TLS too. Other sites read the
view through an internal load balancer that admits only the ranges of the sites the plan says read it.
"""
from __future__ import annotations

import json
import math

import yaml

from infra import labels as L
from infra.spec import FeatureView
from workloads.options import AWS_INTERNAL_NLB, METALLB_FLEET
from workloads.render import feast_repo, flink, meta, pods
from workloads.render import redis_sentinel as rs
from workloads.render.certificates import certificate, tls_secret_name
from workloads.render.context import SiteContext, fleet_service_host, service_fqdn
from workloads.render.data import (
    REDIS_PORT,
    SENTINEL_PORT,
    feast_name,
    feast_online_service,
    fleet_name,
    redis_arbiter,
    redis_name,
    redis_peers,
    sentinel_hosts,
)
from workloads.render.model_pods import placement_affinity, spread, tolerations

REPLICAS = 2          # data pods: primary (ordinal 0 on a cold start) + one replica; Sentinels: these two + the arbiter
EXPORTER_PORT = 9121
FLINK_METRICS_PORT = flink.METRICS_PORT
AUTH_MOUNT = rs.AUTH_MOUNT
TLS_MOUNT = rs.TLS_MOUNT
EXPORTER_ADDR = f"rediss://localhost:{REDIS_PORT}"
TLS_VOLUME_MOUNT = {"name": "tls", "mountPath": rs.TLS_MOUNT, "readOnly": True}
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
            "exporter-passwords.json": json.dumps({EXPORTER_ADDR: password})}


def online_store(view: FeatureView, namespace: str, password: str, *, sentinels: list[str] | None = None,
                 tls_dir: str = TLS_MOUNT) -> dict:
    """Feast's `online_store` for the view: Redis through its three Sentinels (`sentinels`, host:port; default the
    cluster's), TLS to both. Redis gets the password and the view's certificate as client certificate; the
    Sentinels get TLS only (`sentinel_kwargs={"ssl":true}`: Feast splits the string at commas, so a Sentinel
    can be given one option) and trust the CA through SSL_CERT_FILE (`feast_tls_env`); their `default` user may
    only discover the primary (redis_sentinel.sentinel_conf)."""
    hosts = ",".join(sentinels or [f"{h}:{SENTINEL_PORT}" for h in sentinel_hosts(view.name, namespace)])
    tls = f"ssl=true,ssl_certfile={tls_dir}/tls.crt,ssl_keyfile={tls_dir}/tls.key,ssl_ca_certs={tls_dir}/ca.crt"
    return {"type": "redis", "redis_type": "redis_sentinel", "sentinel_master": rs.master_name(view),
            "connection_string": f'{hosts},password={password},{tls},sentinel_kwargs={{"ssl":true}}',
            "key_ttl_seconds": view.ttl_seconds or None}


def feast_tls_env(tls_dir: str = TLS_MOUNT) -> list[dict]:
    """The Feast process trusts the fleet CA for its Sentinel connections (OpenSSL's default verify file; the
    system CA directory still serves everything else)."""
    return [{"name": "SSL_CERT_FILE", "value": f"{tls_dir}/ca.crt"}]


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


def redis_tls_secret_name(view: FeatureView) -> str:
    return tls_secret_name(redis_name(view.name))


def feast_tls_secret_name(view: FeatureView) -> str:
    return tls_secret_name(feast_online_service(view.name))


def redis_dns_names(ctx: SiteContext, view: FeatureView, namespace: str) -> list[str]:
    """Every name a client reaches the view's Redis or Sentinels by: the data pods and the arbiter (Sentinel
    announces them), the read Service, the fleet load balancer, and localhost (exporter, probes)."""
    name = redis_name(view.name)
    return [*sentinel_hosts(view.name, namespace), service_fqdn(name, namespace), service_fqdn(redis_peers(view.name), namespace),
            fleet_service_host(fleet_name(name), namespace, ctx.site, ctx.domain), "localhost"]


def redis_certificate(ctx: SiteContext, view: FeatureView, namespace: str) -> dict:
    lbls = _labels(ctx, view, "redis", "online-store", ctx.images.redis)
    return certificate(redis_tls_secret_name(view), namespace, lbls, secret_name=redis_tls_secret_name(view),
                       dns_names=redis_dns_names(ctx, view, namespace), issuer=ctx.cert_issuer)


def feast_certificate(ctx: SiteContext, view: FeatureView, namespace: str) -> dict:
    lbls = _labels(ctx, view, "feast", "feature-server", ctx.images.feast)
    svc = feast_online_service(view.name)
    return certificate(feast_tls_secret_name(view), namespace, lbls, secret_name=feast_tls_secret_name(view),
                       dns_names=[svc, f"{svc}.{namespace}", service_fqdn(svc, namespace)], issuer=ctx.cert_issuer)


def _labels(ctx: SiteContext, view: FeatureView, app: str, component: str, image: str, instance: str | None = None) -> dict:
    out = meta.labels(app, component, instance=instance or meta.k8s_name(app, view.name), version=meta.image_version(image),
                      site=ctx.site, tier=view.privacy_tier.value)
    out[meta.FEATURE_VIEW] = view.name
    return out


def _sentinel(ctx: SiteContext, view: FeatureView, self_name: str, namespace: str, first: str) -> dict:
    script = rs.sentinel_start(view, self_name, sentinel_hosts(view.name, namespace), first)
    ping = ["sh", "-c", f"redis-cli {rs.cli_tls()} -h localhost -p {SENTINEL_PORT} ping | grep -q PONG"]
    return pods.container(
        "sentinel", ctx.images.redis, command=["sh", "-c"], args=[script],
        ports=[{"name": "sentinel", "containerPort": SENTINEL_PORT, "protocol": "TCP"}],
        res=pods.resources(SENTINEL_CPU, SENTINEL_MEMORY_GIB),
        readiness=pods.exec_probe(ping, period=5), liveness=pods.tcp_probe("sentinel", period=15, failures=4),
        mounts=[{"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True}, TLS_VOLUME_MOUNT,
                {"name": "sentinel-tmp", "mountPath": rs.WORK_DIR}])


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
    ping = ["sh", "-c", f'redis-cli {rs.cli_tls()} -h localhost --no-auth-warning -a "$(cat {AUTH_MOUNT}/password)" ping '
            "| grep -q PONG"]
    auth_volume = {"name": "auth", "secret": {"secretName": auth_secret_name(view), "defaultMode": 0o440}}
    tls_volume = {"name": "tls", "secret": {"secretName": redis_tls_secret_name(view), "defaultMode": 0o440}}
    redis = pods.container(
        "redis", ctx.images.redis, command=["sh", "-c"], args=[start],
        ports=[{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        res=pods.resources(view.online_cpu, mem * 1.25 + 0.25),
        readiness=pods.exec_probe(ping, period=5), liveness=pods.tcp_probe("redis", period=15, failures=4),
        mounts=[{"name": "data", "mountPath": "/data"}, {"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True},
                TLS_VOLUME_MOUNT, {"name": "tmp", "mountPath": "/tmp"}])
    exporter = pods.container(
        "exporter", ctx.images.redis_exporter,
        args=[f"--redis.addr={EXPORTER_ADDR}", f"--redis.password-file={AUTH_MOUNT}/exporter-passwords.json",
              f"--tls-ca-cert-file={TLS_MOUNT}/ca.crt", f"--tls-client-cert-file={TLS_MOUNT}/tls.crt",
              f"--tls-client-key-file={TLS_MOUNT}/tls.key"],
        ports=[{"name": "metrics", "containerPort": EXPORTER_PORT, "protocol": "TCP"}],
        res=pods.resources(0.1, 0.125),
        readiness=pods.http_probe("/health", "metrics", period=10), liveness=pods.http_probe("/health", "metrics", period=30),
        mounts=[{"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True}, TLS_VOLUME_MOUNT])
    sentinel = _sentinel(ctx, view, f"$HOSTNAME.{service_fqdn(peers, namespace)}", namespace, first)
    claim: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": f"{disk}Gi"}}}
    if ctx.storage_class:
        claim["storageClassName"] = ctx.storage_class
    affinity = placement_affinity(view.privacy_tier.value, ctx.privacy_zones)
    tols = tolerations(view.privacy_tier.value, False, ctx.privacy_zones) or None
    spec = pods.pod_spec([redis, exporter, sentinel], volumes=[
        auth_volume, tls_volume, pods.empty_dir("tmp", size_limit="256Mi"), pods.empty_dir("sentinel-tmp", size_limit="16Mi")],
        affinity=affinity, tolerations=tols, spread=spread(ctx.site_kind, sel, 1, hard=True), termination_grace=60)
    # The arbiter: a third Sentinel, preferably on a node (and zone or rack) of its own, so that losing the
    # primary's node leaves two of three Sentinels to elect the replica.
    a_lbls = {**_labels(ctx, view, "redis", "online-store", ctx.images.redis, instance=arbiter), REDIS_GROUP: name}
    a_sel = meta.selector(a_lbls)
    a_affinity = {**affinity, "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": sel}, "topologyKey": L.HOSTNAME}}]}}
    a_spec = pods.pod_spec([_sentinel(ctx, view, service_fqdn(arbiter, namespace), namespace, first)],
                           volumes=[auth_volume, tls_volume, pods.empty_dir("sentinel-tmp", size_limit="16Mi")],
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
    out.append(redis_certificate(ctx, view, namespace))
    if fleet_sources:
        out.append(fleet_service(ctx, fleet_name(name), namespace, lbls, sel, redis_port, fleet_sources))
    return out


def fleet_service(ctx: SiteContext, name: str, namespace: str, lbls: dict, sel: dict, ports: list[dict],
                  sources: list[str], annotations: dict | None = None) -> dict:
    """Internal load balancer for readers on other sites: never internet-facing, admitting only `sources` (the
    networks of the sites that read it), and keeping the client's address (so the store's NetworkPolicy can check
    it: NLB ip targets preserve it only when told; MetalLB with externalTrafficPolicy Local does)."""
    ann = dict(AWS_INTERNAL_NLB if ctx.site_kind == "cloud" else METALLB_FLEET)
    if ctx.site_kind == "cloud":
        ann["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"] = "preserve_client_ip.enabled=true"
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
                "volumes": [{"name": "feature-repo", "configMap": {"name": feast_repo_name(view), "defaultMode": 0o444}},
                            {"name": "redis-tls", "secret": {"secretName": redis_tls_secret_name(view), "defaultMode": 0o440}}],
                "onlineStore": {
                    "persistence": {"store": {"type": "redis", "secretRef": {"name": feast_secret_name(view)},
                                              "secretKeyName": "redis"}},
                    # TLS: the operator serves https on 443 (target 6567) with this Secret's tls.crt/tls.key
                    "server": {"image": ctx.images.feast, "metrics": True, "logLevel": "info",
                               "resources": pods.resources(1, 2), "env": feast_tls_env(),
                               "tls": {"secretRef": {"name": feast_tls_secret_name(view)}},
                               "volumeMounts": [{"name": "feature-repo", "mountPath": FEATURE_REPO_MOUNT, "readOnly": True},
                                                {"name": "redis-tls", "mountPath": TLS_MOUNT, "readOnly": True}]},
                },
            },
        },
    }


def flink_objects(ctx: SiteContext, view: FeatureView, namespace: str) -> list[dict]:
    """Streaming ingestion (workloads/render/flink.py): the job, its RBAC, and its state volume where it has one. The
    job pushes through the feature server and trusts the fleet CA (ca.crt of the view's certificate Secret)."""
    return flink.flink_objects(ctx, view, namespace, ca_secret=redis_tls_secret_name(view))
