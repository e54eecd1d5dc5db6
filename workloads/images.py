"""Every container image and Helm chart the serving stack runs, with its version: the one place defaults live.

Override per stack by passing `Images(...)` / `Charts(...)` in `WorkloadOptions` (e.g. to point at a
registry mirror or to pin digests: any field accepts `repo@sha256:...` as well as `repo:tag`).
Versions are explicit; `latest` or an untagged image is refused by `check_pinned`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from infra.versions import OPERATORS

_PINNED = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True)
class Images:
    """Container images by role. Tags follow the upstream release each operator CRD in shared/crds targets."""

    vllm: str = "vllm/vllm-openai:v0.11.0"
    triton: str = "nvcr.io/nvidia/tritonserver:25.09-py3"
    redis: str = "redis:7.4.6-alpine"
    redis_exporter: str = "oliver006/redis_exporter:v1.78.0"
    qdrant: str = "qdrant/qdrant:v1.15.5"
    curl: str = "curlimages/curl:8.16.0"
    feast: str = "quay.io/feastdev/feature-server:0.67.0"
    """The Feast release the generated repositories are tested with (scripts/feast_venv.sh pins the same)."""
    flink: str = "flink:1.20.3-scala_2.12-java17"
    feature_ingest: str = "ghcr.io/hybridml/feature-ingest:0.1.0-flink1.20.3"
    """The streaming views' Flink job image (workloads/render/flink.py): `flink` above plus the project's Python with
    PyFlink (apache-flink) of the same Flink first on PATH, the Kafka connector jar of tools/kafka_rig.py in
    /opt/flink/lib, Flink's S3 plugin, the job (`workloads/streaming` and `workloads/__init__.py`, nothing else) at
    /opt/hybridml on PYTHONPATH, run as the rendered pods' UID. Recipe: workloads/streaming/Containerfile, its context
    from scripts/job_image_context.py (every version from its one place), checked against the rendered FlinkDeployment
    by tests/workloads/test_job_image.py. Not built here (no container runtime or registry): a release pipeline must
    build and push it under this tag."""
    ray_llm: str = "rayproject/ray-llm:2.49.1-py311-cu128"
    """Ray with vLLM and `ray.data.llm`: every pod of a vLLM batch pipeline (head, workers, job submitter). A CPU batch
    pipeline's pods run its own image (`engine.image`, with Ray installed)."""

    def all(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class HelmChart:
    chart: str
    repo: str
    version: str
    namespace: str


def _chart(operator: str) -> HelmChart:
    """A chart the program installs, at the version of infra/versions.py (the one table of operator pins)."""
    release = OPERATORS[operator]
    assert release.chart and release.namespace and release.version, operator
    repo, _, chart = release.chart.rpartition("/")
    return HelmChart(chart, repo, release.version, release.namespace)


@dataclass(frozen=True)
class Charts:
    """Controllers the gateway needs, installed as pinned Helm releases on real (non-simulated) clusters."""

    envoy_gateway: HelmChart = field(default_factory=lambda: _chart("envoy-gateway"))
    ai_gateway_crds: HelmChart = field(default_factory=lambda: _chart("ai-gateway-crds"))
    ai_gateway: HelmChart = field(default_factory=lambda: _chart("ai-gateway"))
    cert_manager: HelmChart = field(default_factory=lambda: _chart("cert-manager"))


def is_pinned(image: str) -> bool:
    """An explicit tag (not `latest`) or a digest."""
    if not _PINNED.match(image):
        return False
    name_tag = image.split("@", 1)[0]
    has_digest = "@sha256:" in image
    last = name_tag.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    if tag == "latest":
        return False
    return has_digest or tag is not None


def check_pinned(images: Images) -> list[str]:
    """Names of image roles whose reference is untagged or `latest` (empty when all are pinned)."""
    return [role for role, ref in images.all().items() if not is_pinned(ref)]
