"""The local control planes of a spec: plan it, derive the clusters (fromspec), bring them up, add
what every real cluster of the fleet provides before Pulumi runs (a default StorageClass).

Used by `hybridml local up`, `scripts/local_up.sh` and the end-to-end tests.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridml.local.controlplane import ClusterStatus, api_client, down, status, up
from hybridml.local.fromspec import cluster_name, clusters_from_spec
from hybridml.local.kubeapi import KubeAPI
from hybridml.local.nodes import ClusterDef
from hybridml.local.paths import DEFAULT_CRD_DIR, DEFAULT_STATE_DIR, state_dir_for
from infra import labels

DEFAULT_SPEC = "infra/environments/local.yaml"
STORAGE_CLASS = "hybridml-local"
# The CRDs the serving stack uses on a local cluster (no Karpenter there): every file of the CRD
# directory except these.
SKIP_CRD_PATTERNS = ("karpenter.*",)
EXTRA_CRD_FILES = ("more/cert-manager.certificates.yaml", "more/cert-manager.clusterissuers.yaml", "more/kuberay.rayclusters.yaml",
                   "more/kuberay.rayjobs.yaml", "more/kuberay.rayservices.yaml")
"""CRDs of ``more/`` the serving stack writes objects of: the fleet's ClusterIssuer and Certificates (workloads/render/fleet_ca.py, certificates.py;
admitted, not issued: no cert-manager controller runs on a local control plane), and the batch pipelines' RayClusters
and RayJobs (workloads/render/ray.py), which the KubeRay operator of each control plane reconciles (components.py;
it also watches RayServices, and exits after two minutes without their CRD: the program writes none)."""


@dataclass
class LocalUpResult:
    environment: str
    clusters: list[ClusterDef]
    status: dict[str, ClusterStatus]
    kubeconfig: Path
    timings: dict[str, float] = field(default_factory=dict)


def plan_clusters(spec: str | os.PathLike, sites: Sequence[str] | None = None) -> tuple[Any, list[ClusterDef]]:
    """(environment, cluster definitions) of a spec. Raises SpecError / PlacementInfeasible."""
    from infra.loader import load_environment
    from policies.placement import solve

    env = load_environment(str(spec))
    plan = solve(env)
    return env, clusters_from_spec(env, plan, sites)


def crd_patterns(crd_dir: Path | None) -> list[str] | None:
    if crd_dir is None or not Path(crd_dir).is_dir():
        return None
    import fnmatch

    top = sorted(p.name for p in Path(crd_dir).iterdir()
                 if p.suffix in (".yaml", ".yml", ".json") and not any(fnmatch.fnmatch(p.name, s) for s in SKIP_CRD_PATTERNS))
    return top + [f for f in EXTRA_CRD_FILES if (Path(crd_dir) / f).is_file()]


def ensure_storage_class(api: KubeAPI) -> None:
    """A default StorageClass served by kube-controller-manager's host-path provisioner (volumes are
    never mounted: the pods are kwok's), like the default class every EKS/on-prem cluster has."""
    obj = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS,
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                     "labels": {labels.SIMULATED: "true"}},
        "provisioner": "kubernetes.io/host-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }
    path = "/apis/storage.k8s.io/v1/storageclasses"
    if api.get_or_none(f"{path}/{STORAGE_CLASS}") is None:
        api.post(path, obj)


def up_local(spec: str | os.PathLike = DEFAULT_SPEC, state_dir: str | os.PathLike | None = None,
             crd_dir: str | os.PathLike | None = DEFAULT_CRD_DIR, *, sites: Sequence[str] | None = None,
             log: Callable[[str], None] | None = None) -> LocalUpResult:
    """Start (or reconcile) one local control plane per site of the spec; idempotent.
    ``state_dir`` defaults to the environment's own (`state_dir_for(env.name)`: `.local` for `local`,
    `.local/envs/<env>` for others such as `sim`)."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    env, clusters = plan_clusters(spec, sites)
    timings["plan"] = time.monotonic() - t0
    if state_dir is None:
        state_dir = state_dir_for(env.name)
    t1 = time.monotonic()
    crds = Path(crd_dir) if crd_dir is not None else None
    res = up(clusters, state_dir, crds, crd_patterns=crd_patterns(crds), log=log)
    timings["control planes"] = time.monotonic() - t1
    for c in clusters:
        api = api_client(c.name, state_dir)
        try:
            ensure_storage_class(api)
        finally:
            api.close()
    sd = Path(state_dir).resolve()
    timings["total"] = time.monotonic() - t0
    return LocalUpResult(environment=env.name, clusters=clusters, status=res, kubeconfig=sd / "kubeconfig",
                         timings=timings)


def down_local(state_dir: str | os.PathLike | None = None, spec: str | os.PathLike | None = None,
               sites: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Stop what `up_local` started: every cluster of the state dir, or only those of ``spec``
    (whose state dir is then the default, `state_dir_for(env.name)`, when ``state_dir`` is None)."""
    names = None
    if spec is not None:
        from infra.loader import load_environment

        env = load_environment(str(spec))
        names = [cluster_name(s.name) for s in env.sites if sites is None or s.name in sites]
        if state_dir is None:
            state_dir = state_dir_for(env.name)
    return down(state_dir, names)


def state_dir_of(spec: str | os.PathLike | None, state_dir: str | os.PathLike | None = None) -> Path:
    """The state dir of a spec's local control planes: ``state_dir`` if given, else the environment's
    (`state_dir_for(env.name)`); no spec: the `local` environment's `.local`."""
    if state_dir is not None:
        return Path(state_dir).resolve()
    if spec is None:
        return DEFAULT_STATE_DIR
    from infra.loader import load_environment

    return state_dir_for(load_environment(str(spec)).name)


__all__ = ["DEFAULT_SPEC", "DEFAULT_STATE_DIR", "LocalUpResult", "STORAGE_CLASS", "down_local",
           "ensure_storage_class", "plan_clusters", "state_dir_of", "status", "up_local"]
