"""Streaming ingestion of a feature view: a Flink FlinkDeployment (native mode) writing the view's features into its
Redis over TLS, and where its state lives. Pure: returns manifests.

**State stays in its site** (`flink_state`): the checkpoints, savepoints and HA metadata of a pii/restricted view go
to the datacenter's own object store when the spec declares one (`sites[].object_store`, S3 API over HTTPS, the
platform's credentials Secret), else to a PersistentVolumeClaim rendered beside the job (ReadWriteMany: the
JobManager and every TaskManager write it; state dirs `file:///flink-state/...`). Never a cloud bucket: the rule
`flink-state-in-site` checks every sensitive FlinkDeployment. Public/internal views keep the fleet's bucket
(`SiteContext.flink_state_uri`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from infra.spec import FeatureView
from workloads.render import meta, pods
from workloads.render import redis_sentinel as rs
from workloads.render.context import SiteContext
from workloads.render.data import SENTINEL_PORT, sentinel_hosts
from workloads.render.model_pods import placement_affinity, tolerations

METRICS_PORT = 9249
STATE_MOUNT = "/flink-state"
STATE_DIR_KEYS = ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "high-availability.storageDir")
"""The flinkConfiguration keys that say where the job's state goes (rule flink-state-in-site reads the same)."""
S3_ENDPOINT_KEY = "s3.endpoint"


@dataclass(frozen=True)
class FlinkState:
    """Where a view's Flink state goes on one site."""

    base: str                                      # checkpoints, savepoints and ha below it
    config: dict[str, str] = field(default_factory=dict)
    env: list[dict] = field(default_factory=list)
    claim: dict | None = None                      # the PersistentVolumeClaim, when the state is on a volume

    def dirs(self) -> dict[str, str]:
        return dict(zip(STATE_DIR_KEYS, (f"{self.base}/checkpoints", f"{self.base}/savepoints", f"{self.base}/ha"),
                        strict=True))


def job_name(view: FeatureView) -> str:
    return meta.k8s_name("ingest", view.name, limit=45)


def state_claim_name(view: FeatureView) -> str:
    return meta.k8s_name(job_name(view), "state")


def state_gib(view: FeatureView) -> int:
    """RocksDB keeps about the online data; three retained checkpoints, savepoints and HA metadata on top."""
    return int(math.ceil(view.online_memory_gib * 4 + 5))


def flink_state(ctx: SiteContext, view: FeatureView, namespace: str, lbls: dict) -> FlinkState:
    path = f"{ctx.env_name}/{ctx.site}/{view.name}"
    if not view.privacy_tier.is_sensitive:
        return FlinkState(f"{ctx.flink_state_uri}/{path}")
    store = ctx.object_store
    if store is not None:
        secret = store.credentials_secret
        env = [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
               for var, key in (("AWS_ACCESS_KEY_ID", "access-key"), ("AWS_SECRET_ACCESS_KEY", "secret-key"))]
        return FlinkState(f"s3://{store.bucket}/{path}", {S3_ENDPOINT_KEY: store.endpoint, "s3.path.style.access": "true"},
                          env)
    spec: dict = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": f"{state_gib(view)}Gi"}}}
    if ctx.storage_class:
        spec["storageClassName"] = ctx.storage_class
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": meta.metadata(state_claim_name(view), namespace, lbls), "spec": spec}
    return FlinkState(f"file://{STATE_MOUNT}/{path}", claim=claim)


def flink_objects(ctx: SiteContext, view: FeatureView, namespace: str, *, redis_tls_secret: str,
                  auth_secret: str) -> list[dict]:
    """Streaming ingestion: a Flink application job writing the view's features into Redis (TLS, the view's
    certificate as its client certificate), with its state where `flink_state` says."""
    name = job_name(view)
    lbls = meta.labels("flink", "stream-processor", instance=meta.k8s_name("flink", view.name),
                       version=meta.image_version(ctx.images.feature_ingest), site=ctx.site, tier=view.privacy_tier.value)
    lbls[meta.FEATURE_VIEW] = view.name
    sa = name
    state = flink_state(ctx, view, namespace, lbls)
    mounts = [{"name": "redis-auth", "mountPath": rs.AUTH_MOUNT, "readOnly": True},
              {"name": "redis-tls", "mountPath": rs.TLS_MOUNT, "readOnly": True}]
    volumes = [{"name": "redis-auth", "secret": {"secretName": auth_secret, "defaultMode": 0o440,
                                                 "items": [{"key": "password", "path": "password"}]}},
               {"name": "redis-tls", "secret": {"secretName": redis_tls_secret, "defaultMode": 0o440}}]
    if state.claim is not None:
        mounts.append({"name": "state", "mountPath": STATE_MOUNT})
        volumes.append({"name": "state", "persistentVolumeClaim": {"claimName": state.claim["metadata"]["name"]}})
    container: dict = {
        "name": "flink-main-container",
        # Flink rewrites its configuration directory at start: writable root filesystem (documented
        # exemption READ_ONLY_ROOT_EXEMPT["flink"]); everything else of `restricted` holds.
        "securityContext": {**pods.container_security_context(), "readOnlyRootFilesystem": False},
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "volumeMounts": mounts,
    }
    if state.env:
        container["env"] = list(state.env)
    out: list[dict] = [
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
    ]
    if state.claim is not None:
        out.append(state.claim)
    out.append(
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
                 **state.dirs(),
                 **state.config,
                 "high-availability.type": "kubernetes",
                 "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
                 "metrics.reporter.prom.port": str(METRICS_PORT),
             },
             "podTemplate": {
                 "metadata": {"labels": lbls},
                 "spec": {
                     "securityContext": pods.pod_security_context(),
                     "affinity": placement_affinity(view.privacy_tier.value, ctx.privacy_zones),
                     "tolerations": tolerations(view.privacy_tier.value, False, ctx.privacy_zones),
                     "containers": [container],
                     "volumes": volumes,
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
                          "--redis-password-file", f"{rs.AUTH_MOUNT}/password",
                          # TLS to the Sentinels and to Redis; the view's certificate is the client certificate
                          "--redis-tls", "--redis-ca-file", f"{rs.TLS_MOUNT}/ca.crt",
                          "--redis-cert-file", f"{rs.TLS_MOUNT}/tls.crt", "--redis-key-file", f"{rs.TLS_MOUNT}/tls.key",
                          "--ttl-seconds", str(view.ttl_seconds)],
                 "parallelism": 2,
                 "upgradeMode": "savepoint",
                 "state": "running",
             },
         }})
    return out
