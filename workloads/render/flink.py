"""Streaming ingestion of a feature view: a Flink FlinkDeployment (native mode) running the project's PyFlink job
(workloads/streaming) that reads the view's stream and pushes its rows through the view's Feast feature server
(`/push`, https, the fleet CA), and where its state lives. Pure: returns manifests.

**The job** (`job_config`, `job_spec`): the Flink operator's Python convention, `jarURI` the flink-python jar of the
image's Flink and `entryClass` PythonDriver, `args` `-pym workloads.streaming.job` and then the job's own arguments
(`workloads.streaming.config.JobConfig.to_args`): view, push source, feature server URL, CA file, the view's keys and
typed features, the Kafka brokers and topic of the spec's `stream`. The image (`Images.feature_ingest`) is the
image's Flink with Python, PyFlink of the same version, the Kafka connector in its lib and this repository's
`workloads/streaming` package at /opt/hybridml (its PYTHONPATH): `workloads/streaming/Containerfile`, whose build
context `scripts/job_image_context.py` prepares.

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

from infra.features import StreamSource
from infra.spec import FeatureView
from workloads.render import feast_repo, meta, pods
from workloads.render.context import SiteContext, service_fqdn
from workloads.render.data import FEAST_PORT, feast_online_service
from workloads.render.model_pods import placement_affinity, tolerations
from workloads.streaming.config import Column, JobConfig

METRICS_PORT = 9249
STATE_MOUNT = "/flink-state"
STATE_DIR_KEYS = ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir", "high-availability.storageDir")
"""The flinkConfiguration keys that say where the job's state goes (rule flink-state-in-site reads the same)."""
S3_ENDPOINT_KEY = "s3.endpoint"
FLINK_VERSION = "1.20.3"
"""The Flink of the job image and of PyFlink locally (scripts/flink_venv.sh pins apache-flink to the same)."""
PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
PYTHON_JAR = f"local:///opt/flink/opt/flink-python-{FLINK_VERSION}.jar"
JOB_MODULE = "workloads.streaming.job"
CA_MOUNT = "/etc/hybridml/fleet-ca"
JOB_PARALLELISM = 2


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


def job_config(view: FeatureView, namespace: str) -> JobConfig:
    """What the job is told: the view's columns, its push source and feature server (https, the fleet CA), its stream."""
    src = view.source
    stream = view.stream or StreamSource()
    return JobConfig(
        feature_view=view.name, push_source=feast_repo.push_source_name(view.name),
        feature_server=f"https://{service_fqdn(feast_online_service(view.name), namespace)}:{FEAST_PORT}",
        keys=tuple(Column(e.key, e.value_type) for e in view.entities),
        features=tuple(Column(f.name, f.dtype, f.length) for f in view.features),
        timestamp_field=src.timestamp_field if src else "event_timestamp",
        created_field=src.created_timestamp_field if src else None,
        tls_ca=f"{CA_MOUNT}/ca.crt", source="kafka", kafka_bootstrap_servers=tuple(stream.bootstrap_servers),
        kafka_topic=stream.topic_of(view.name), kafka_group=job_name(view), parallelism=JOB_PARALLELISM)


def job_spec(view: FeatureView, namespace: str) -> dict:
    """The FlinkDeployment's `job`: PyFlink's driver running workloads.streaming.job with `job_config`'s arguments."""
    return {"jarURI": PYTHON_JAR, "entryClass": PYTHON_DRIVER,
            "args": ["-pym", JOB_MODULE, *job_config(view, namespace).to_args()],
            "parallelism": JOB_PARALLELISM, "upgradeMode": "savepoint", "state": "running"}


def flink_objects(ctx: SiteContext, view: FeatureView, namespace: str, *, ca_secret: str) -> list[dict]:
    """Streaming ingestion: the project's PyFlink job pushing the view's rows through its feature server (TLS; only
    the fleet CA of `ca_secret` is mounted, the job holds no Redis credentials), with its state where `flink_state`
    says."""
    name = job_name(view)
    lbls = meta.labels("flink", "stream-processor", instance=meta.k8s_name("flink", view.name),
                       version=meta.image_version(ctx.images.feature_ingest), site=ctx.site, tier=view.privacy_tier.value)
    lbls[meta.FEATURE_VIEW] = view.name
    sa = name
    state = flink_state(ctx, view, namespace, lbls)
    mounts = [{"name": "fleet-ca", "mountPath": CA_MOUNT, "readOnly": True}]
    volumes = [{"name": "fleet-ca", "secret": {"secretName": ca_secret, "defaultMode": 0o444,
                                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]
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
                 # Python in the TaskManager (pemja) rather than Beam's worker process: what was measured locally
                 "python.execution-mode": "thread",
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
             "job": job_spec(view, namespace),
         }})
    return out
