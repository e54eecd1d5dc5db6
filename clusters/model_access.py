"""How model servers get their weights: the contract between the clusters and the workloads. Pure (no Pulumi).

- Identity: every serving namespace that runs vLLM or Triton pipelines has the ServiceAccount `model-server`
  (created by workloads/model_delivery.py on every site; the model pods run as it). On cloud sites the cluster binds
  it through EKS Pod Identity to one IAM role per namespace that may read exactly the S3 model artifacts of the
  pipelines placed there (`s3_model_reads`, clusters/iam.py `model_reader_policy`).
- Cache: vLLM weights go to one ReadWriteMany volume per serving namespace and site (`model-cache`), filled once by
  the first pod that needs a model, read by every later start. On cloud sites its StorageClass is
  `MODEL_CACHE_CLASS` (EFS, created by the cluster); elsewhere the cluster's default class, which must serve
  ReadWriteMany (README "Prerequisites").
"""
from __future__ import annotations

from collections.abc import Iterable

from infra.labels import namespace_for
from infra.spec import Environment, Pipeline

MODEL_SERVICE_ACCOUNT = "model-server"
MODEL_CACHE_CLASS = "hybridml-models"
MODEL_CACHE_UID = 10001
"""The POSIX user of the cache's EFS access points: the UID every serving pod runs as (workloads/render/pods.UID)."""
MODEL_SERVER_ENGINES = ("vllm", "triton")
"""Engines whose pods run as the model-server ServiceAccount (CPU services bring their own image and model loading)."""


def pipeline_models(p: Pipeline) -> list[str]:
    """Every model artifact a pipeline's pods load: its model, its variants' models and a speculative draft model."""
    out = [p.model] + [v.model for v in p.variants]
    spec = getattr(p.engine, "speculative", None)
    if spec is not None and spec.model.strip("[]").lower() != "ngram":
        out.append(spec.model)
    return list(dict.fromkeys(out))


def s3_model_reads(env: Environment, pipelines: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Serving namespace -> the s3:// model URIs its vLLM and Triton pipelines among `pipelines` read (sorted);
    namespaces that read none are left out (their ServiceAccount gets no role)."""
    out: dict[str, set[str]] = {}
    for name in pipelines:
        p = env.pipeline(name)
        if p.engine.kind not in MODEL_SERVER_ENGINES:
            continue
        uris = {m for m in pipeline_models(p) if m.startswith("s3://")}
        if uris:
            out.setdefault(namespace_for(p.privacy_tier), set()).update(uris)
    return {ns: tuple(sorted(uris)) for ns, uris in sorted(out.items())}
