"""What the end-to-end tests read back from the local clusters (through hybridml.local's KubeAPI):
workloads not ready, pods, nodes, the objects Pulumi manages, and helpers to wait for a condition or kill
a process session."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from hybridml.local import kserve
from hybridml.local.fromspec import cluster_name
from infra import labels as L

# the namespaces a local control plane has before anything is deployed to it (`local up` runs KServe's controller)
LOCAL_STACK_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease", kserve.NAMESPACE}


def items(api, path: str) -> list[dict]:
    return api.get(path)["items"]


def wait(what: str, done, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(1)


def wait_for(what: str, fn, timeout: float = 120.0, interval: float = 0.5):
    """`fn()` once it is truthy (its value is returned); AssertionError with the last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last={last!r}")


def workloads_ready(apis) -> list[str]:
    """Deployments/StatefulSets not (yet) ready, as readable strings (empty: all ready)."""
    bad = []
    for site, api in apis.items():
        for kind, path in (("Deployment", "/apis/apps/v1/deployments"), ("StatefulSet", "/apis/apps/v1/statefulsets")):
            for o in items(api, path):
                want = o["spec"].get("replicas", 1)
                st = o.get("status") or {}
                if st.get("readyReplicas", 0) != want or st.get("observedGeneration") != o["metadata"]["generation"]:
                    bad.append(f"{site} {kind} {o['metadata']['namespace']}/{o['metadata']['name']}: "
                               f"{st.get('readyReplicas', 0)}/{want} ready")
    return bad


def serving_not_ready(apis) -> list[str]:
    """InferenceServices not (yet) Ready and pods neither Running nor done: KServe makes its predictor Deployments
    after `pulumi up` returns (Pulumi does not await custom resources), so "every Deployment ready" alone can pass
    before the predictors exist."""
    bad = []
    for site, api in apis.items():
        try:
            isvcs = items(api, "/apis/serving.kserve.io/v1beta1/inferenceservices")
        except Exception:   # noqa: BLE001 - no KServe CRDs on this cluster: nothing to wait for
            isvcs = []
        for o in isvcs:
            conditions = {c.get("type"): c.get("status") for c in (o.get("status") or {}).get("conditions") or []}
            if conditions.get("Ready") != "True":
                bad.append(f"{site} InferenceService {o['metadata']['namespace']}/{o['metadata']['name']}: not Ready")
        for p in items(api, "/api/v1/pods"):
            phase = (p.get("status") or {}).get("phase")
            if p["metadata"]["namespace"] != "kube-system" and phase not in ("Running", "Succeeded"):
                bad.append(f"{site} pod {p['metadata']['namespace']}/{p['metadata']['name']}: {phase}")
    return bad


def pods(apis) -> dict[str, list[dict]]:
    return {site: [p for p in items(api, "/api/v1/pods") if p["metadata"]["namespace"] != "kube-system"]
            for site, api in apis.items()}


def nodes(apis) -> dict[str, dict[str, dict]]:
    return {site: {n["metadata"]["name"]: n for n in items(api, "/api/v1/nodes")} for site, api in apis.items()}


def gpu_request(pod: dict) -> int:
    total = 0
    for c in pod["spec"].get("containers") or []:
        res = c.get("resources") or {}
        total += int((res.get("limits") or res.get("requests") or {}).get(L.GPU_RESOURCE, 0) or 0)
    return total


def pulumi_managed(apis, kinds: set[str]) -> set[tuple[str, str, str, str]]:
    """Objects in the clusters written by Pulumi (a pulumi-kubernetes field manager), for the given kinds."""
    out = set()
    for site, api in apis.items():
        resources = discovery(api)
        for kind in sorted(kinds):
            path = resources.get(kind)
            if path is None:
                continue
            for o in api.get(path)["items"]:
                managers = {m.get("manager", "") for m in o["metadata"].get("managedFields") or []}
                if any(m.startswith("pulumi") for m in managers):
                    out.add((cluster_name(site), kind, o["metadata"].get("namespace") or "", o["metadata"]["name"]))
    return out


def discovery(api) -> dict[str, str]:
    """kind -> list path of every listable resource (core, apps, ... and CRDs)."""
    paths: dict[str, str] = {}
    core = api.get("/api/v1")
    for r in core["resources"]:
        if "/" not in r["name"] and "list" in r.get("verbs", []):
            paths.setdefault(r["kind"], f"/api/v1/{r['name']}")
    for g in api.get("/apis")["groups"]:
        gv = g["preferredVersion"]["groupVersion"]
        for r in api.get(f"/apis/{gv}")["resources"]:
            if "/" not in r["name"] and "list" in r.get("verbs", []):
                paths.setdefault(r["kind"], f"/apis/{gv}/{r['name']}")
    return paths


def gone(apis) -> bool:
    for api in apis.values():
        if {n["metadata"]["name"] for n in items(api, "/api/v1/namespaces")} - LOCAL_STACK_NAMESPACES:
            return False
        if items(api, "/api/v1/persistentvolumes"):
            return False
    return True


def kill_session(sid: int) -> None:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:           # field 6 of /proc/PID/stat: the session id
            try:
                os.kill(int(stat.parent.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
