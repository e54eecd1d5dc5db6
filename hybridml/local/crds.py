"""The CustomResourceDefinitions of the serving stack on a local control plane.

The manifests of the CRD directory (``../shared/crds``: KServe, LeaderWorkerSet, KEDA, ...) are
made servable without the operators that normally run beside them (no conversion webhook, no
cert-manager CA injection), applied only when their source file changed (a sha256 per file, kept
on the CRD and in ``crds.json``), and waited for until discovery serves them. CRDs are most of a
cold start, so the unchanged ones are not even parsed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import LocalClusterTimeout
from .kubeapi import KubeAPI
from .paths import write_json

CRD_HASH_ANNOTATION = "hybridml.io/crd-source-sha256"
FIELD_MANAGER = "hybridml-local"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def sanitize_crd(crd: dict[str, Any]) -> dict[str, Any]:
    """A CRD as it can be applied here: no status or server-set metadata, no cert-manager CA
    injection, and every version served without conversion (no conversion webhook runs locally)."""
    crd = dict(crd)
    crd.pop("status", None)
    meta = dict(crd.get("metadata") or {})
    for k in ("creationTimestamp", "resourceVersion", "uid", "generation", "managedFields"):
        meta.pop(k, None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop("cert-manager.io/inject-ca-from", None)
    meta["annotations"] = annotations
    crd["metadata"] = meta
    spec = dict(crd.get("spec") or {})
    conv = spec.get("conversion") or {}
    if conv.get("strategy") == "Webhook":
        # No conversion webhook runs locally: serve every version without conversion.
        spec["conversion"] = {"strategy": "None"}
    crd["spec"] = spec
    return crd


_CRD_PARSE_CACHE: dict[str, list[dict[str, Any]]] = {}
_CRD_PARSE_LOCK = threading.Lock()


def _parse_crds(raw: bytes, sha: str) -> list[dict[str, Any]]:
    """The sanitized CRDs of a manifest (parsed once per process for all clusters)."""
    with _CRD_PARSE_LOCK:
        if sha not in _CRD_PARSE_CACHE:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            _CRD_PARSE_CACHE[sha] = [
                sanitize_crd(doc)
                for doc in yaml.load_all(raw, Loader=loader)
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
            ]
        return _CRD_PARSE_CACHE[sha]


def crd_files(crd_dir: Path, patterns: Sequence[str] | None = None) -> list[Path]:
    """The manifests of ``crd_dir`` (yaml/yml/json), only those matching one of ``patterns`` if given. A pattern
    with a ``/`` names files of a subdirectory (``more/cert-manager.certificates.yaml``); the others match top-level
    file names."""
    def manifests(paths: Iterable[Path]) -> list[Path]:
        return sorted(p for p in paths if p.suffix in (".yaml", ".yml", ".json") and p.is_file())

    files = manifests(crd_dir.iterdir())
    if patterns is not None:
        files = [p for p in files if any(fnmatch.fnmatch(p.name, pat) for pat in patterns if "/" not in pat)]
        files += manifests(p for pat in patterns if "/" in pat for p in crd_dir.glob(pat))
    return files


def install_crds(
    api: KubeAPI,
    crd_dir: Path,
    cache_file: Path,
    timeout: float = 120.0,
    patterns: Sequence[str] | None = None,
) -> list[str]:
    """Apply the CustomResourceDefinitions found in ``crd_dir`` (files matching ``patterns``,
    default all); wait until all are Established.

    A CRD whose source file is unchanged since it was applied (sha256 recorded in an annotation)
    is skipped without parsing the file.
    """
    existing = {
        m["metadata"]["name"]: (m["metadata"].get("annotations") or {}).get(CRD_HASH_ANNOTATION)
        for m in api.list_metadata(CRDS)
    }
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    names: list[str] = []
    pending_crds: list[dict[str, Any]] = []
    for f in crd_files(crd_dir, patterns):
        raw = f.read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        cached = cache.get(f.name)
        if cached and cached.get("sha256") == sha and all(existing.get(n) == sha for n in cached["names"]):
            names += cached["names"]
            continue
        file_names = []
        for crd in _parse_crds(raw, sha):
            crd["metadata"]["annotations"][CRD_HASH_ANNOTATION] = sha
            name = crd["metadata"]["name"]
            if name in existing:
                api.apply(f"{CRDS}/{name}", crd, field_manager=FIELD_MANAGER)
            else:
                api.post(CRDS, crd)
            file_names.append(name)
            pending_crds.append(crd)
        cache[f.name] = {"sha256": sha, "names": file_names}
        names += file_names
    write_json(cache_file, cache)
    wait_crds_established(api, pending_crds, timeout)
    return names


def wait_crds_established(api: KubeAPI, crds: list[dict[str, Any]], timeout: float) -> None:
    """Wait until every CRD is served by discovery, which lists a CRD only once it is Established
    (much cheaper than polling the CRD objects, some of which are close to a megabyte)."""
    deadline = time.monotonic() + timeout
    pending = [
        (c["spec"]["group"], v["name"], c["spec"]["names"]["plural"], c["metadata"]["name"])
        for c in crds
        for v in c["spec"]["versions"]
        if v.get("served", True)
    ]
    while pending:
        discovery: dict[str, set[str]] = {}
        still = []
        for group, version, plural, name in pending:
            gv = f"/apis/{group}/{version}"
            if gv not in discovery:
                status_code, data = api.request_raw("GET", gv)
                discovery[gv] = (
                    {r["name"] for r in json.loads(data).get("resources", [])} if status_code == 200 else set()
                )
            if plural not in discovery[gv]:
                still.append((group, version, plural, name))
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise LocalClusterTimeout(f"CRDs not Established after {timeout:.0f}s: {sorted({p[3] for p in pending})}")
            time.sleep(0.2)


__all__ = ["CRD_HASH_ANNOTATION", "crd_files", "install_crds", "sanitize_crd", "wait_crds_established"]
