"""CPU inference services: Deployment + Service + PDB + HPA (KEDA ScaledObject where the spec allows
scale to zero), one set per A/B variant. Pure: returns manifests."""
from __future__ import annotations

from typing import Any

from infra.spec import CpuEngine, Environment, Pipeline
from workloads import planning
from workloads.render import certificates, meta, pods
from workloads.render.context import SiteContext
from workloads.render.model_pods import declared_tier_label, placement_affinity, pod_tier, spread, tolerations

CREDENTIALS_MOUNT = "/var/run/secrets/hybridml/data"


def names(p: Pipeline, replicas: int) -> dict[str, tuple[str, int]]:
    return {v: (meta.k8s_name(p.name, v), n) for v, n in planning.variant_replicas(p, replicas).items()}


def credentials_secret_name(p: Pipeline) -> str:
    return meta.k8s_name(p.name, "data-credentials")


def objects(ctx: SiteContext, env: Environment, p: Pipeline, replicas: int, namespace: str,
            data_env: list[dict], has_credentials: bool) -> list[dict]:
    e: CpuEngine = p.engine  # type: ignore[assignment]
    models = {v.name: v.model for v in p.variants}
    out = []
    tier = pod_tier(env, p)
    for variant, (name, n) in names(p, replicas).items():
        lbls = meta.labels(p.name, "model-server", instance=name, version=meta.image_version(e.image),
                           site=ctx.site, pipeline=p.name, tier=tier) | declared_tier_label(env, p)
        if variant:
            lbls[meta.VARIANT] = variant
        sel = meta.selector(lbls)
        env_vars = [{"name": "HYBRIDML_PIPELINE", "value": p.name},
                    {"name": "HYBRIDML_MODEL_URI", "value": models.get(variant, p.model)},
                    {"name": "HYBRIDML_SITE", "value": ctx.site},
                    {"name": "PORT", "value": str(e.port)}] + list(data_env)
        mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
        volumes = [pods.empty_dir("tmp", size_limit="2Gi")]
        if any(v["name"] == "HYBRIDML_DATA_TLS_DIR" for v in data_env):   # it reads data: its certificate (data.client_env)
            tls_volume, tls_mount = certificates.client_tls_volume(p.name)
            volumes.append(tls_volume)
            mounts.append(tls_mount)
        if has_credentials:
            mounts.append({"name": "data-credentials", "mountPath": CREDENTIALS_MOUNT, "readOnly": True})
            volumes.append({"name": "data-credentials",
                            "secret": {"secretName": credentials_secret_name(p), "defaultMode": 0o440}})
        c = pods.container(
            "server", e.image, args=e.args, env=env_vars,
            ports=[{"name": "http", "containerPort": e.port, "protocol": "TCP"}],
            res=pods.resources(p.resources.cpu, p.resources.memory_gib),
            startup=pods.http_probe(e.health_path, "http", period=5, failures=60),
            readiness=pods.http_probe(e.health_path, "http", period=5),
            liveness=pods.http_probe(e.health_path, "http", period=15, failures=4), mounts=mounts)
        spec = pods.pod_spec([c], volumes=volumes, affinity=placement_affinity(tier, ctx.privacy_zones),
                             tolerations=tolerations(tier, False, ctx.privacy_zones) or None,
                             spread=spread(ctx.site_kind, sel, p.spread.zone_max_skew, hard=n > 1),
                             termination_grace=30)
        s = planning.scaling(p, n)
        out.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta.metadata(name, namespace, lbls),
            "spec": {"replicas": n, "revisionHistoryLimit": 3, "selector": {"matchLabels": sel},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": lbls}, "spec": spec}},
        })
        out.append({
            "apiVersion": "v1", "kind": "Service", "metadata": meta.metadata(name, namespace, lbls),
            "spec": {"type": "ClusterIP", "selector": sel,
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP",
                                "appProtocol": "http"}]},
        })
        out.append({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta.metadata(name, namespace, lbls),
            "spec": ({"minAvailable": n - 1} if n > 2 else {"maxUnavailable": 1}) | {
                "selector": {"matchLabels": sel}, "unhealthyPodEvictionPolicy": "AlwaysAllow"},
        })
        if s.scale_to_zero:
            query = (f'sum(rate(http_server_request_duration_seconds_count{{namespace="{namespace}",'
                     f'service="{name}"}}[2m])) or vector(0)')
            out.append({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta.metadata(name, namespace, lbls),
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                         "minReplicaCount": 0, "maxReplicaCount": s.max_replicas, "cooldownPeriod": 300,
                         "triggers": [{"type": "prometheus", "name": "rps", "metadata": {
                             "serverAddress": ctx.prometheus_url, "query": query,
                             "threshold": str(s.rps_threshold), "activationThreshold": "0"}}]},
            })
        else:
            out.append({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": meta.metadata(name, namespace, lbls),
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                         "minReplicas": max(1, s.min_replicas), "maxReplicas": max(1, s.max_replicas),
                         "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                             "type": "Utilization", "averageUtilization": int(round(p.target_utilization * 100))}}}],
                         "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}},
            })
    return out
