"""Names and labels: `app.kubernetes.io/*` plus the placement labels of infra.labels."""
from __future__ import annotations

import hashlib
import re

from infra import labels as L

PART_OF = "hybridml"
MANAGED_BY = "pulumi"

# Workload-level label/annotation keys (the placement keys live in infra.labels).
VARIANT = f"{L.PREFIX}/variant"            # A/B variant of a pipeline
LWS_ROLE = L.LWS_ROLE
FEATURE_VIEW = f"{L.PREFIX}/feature-view"
COLLECTION = f"{L.PREFIX}/collection"
USER_REGION = f"{L.PREFIX}/user-region"    # on gateway routes: the region a route serves
MODEL = f"{L.PREFIX}/model"                # annotation: the model artifact a variant serves
BATCH_PIPELINE = f"{L.PREFIX}/batch-pipeline"   # pods and objects of a batch pipeline (workloads/render/ray.py)

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def k8s_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1035 label from parts joined by '-': lower case, starts with a letter, at most `limit` characters.

    Too long names keep a readable prefix and end with a short hash of the full name, so distinct inputs
    stay distinct.
    """
    raw = "-".join(p for p in parts if p)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = "x-" + name
    if len(name) > limit:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        name = name[: limit - 9].rstrip("-") + "-" + digest
    assert _DNS1035.match(name), name
    return name


def labels(name: str, component: str, *, instance: str | None = None, version: str | None = None,
           site: str | None = None, pipeline: str | None = None, tier: str | None = None) -> dict[str, str]:
    """Recommended labels plus placement labels. `name` is the application (vllm, redis, ...)."""
    out = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance or name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    if version:
        out["app.kubernetes.io/version"] = label_value(version)
    if site:
        out[L.SITE] = site
    if pipeline:
        out[L.PIPELINE] = pipeline
    if tier:
        out[L.PRIVACY_TIER] = tier
    return out


def selector(lbls: dict[str, str]) -> dict[str, str]:
    """The stable subset used in selectors (never the version, which changes on upgrade)."""
    keep = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
    return {k: v for k, v in lbls.items() if k in keep}


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9._-], alphanumeric at both ends)."""
    v = re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:63].strip("-._")
    return v


def image_version(image: str) -> str:
    """The tag (or short digest) of an image reference, as a label value."""
    if "@sha256:" in image:
        return "sha256-" + image.split("@sha256:", 1)[1][:12]
    last = image.rsplit("/", 1)[-1]
    return label_value(last.split(":", 1)[1]) if ":" in last else "unversioned"


def metadata(name: str, namespace: str | None, lbls: dict[str, str], annotations: dict | None = None) -> dict:
    out: dict = {"name": name, "labels": dict(lbls)}
    if namespace:
        out["namespace"] = namespace
    if annotations:
        out["annotations"] = dict(annotations)
    return out
