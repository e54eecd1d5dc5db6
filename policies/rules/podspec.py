"""Find the pod templates inside any workload object we emit (core and custom resources)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

POD_TEMPLATE_PATHS: dict[str, list[tuple[str, ...]]] = {
    "Pod": [()],
    "Deployment": [("spec", "template")],
    "StatefulSet": [("spec", "template")],
    "DaemonSet": [("spec", "template")],
    "ReplicaSet": [("spec", "template")],
    "Job": [("spec", "template")],
    "CronJob": [("spec", "jobTemplate", "spec", "template")],
    "LeaderWorkerSet": [("spec", "leaderWorkerTemplate", "leaderTemplate"),
                        ("spec", "leaderWorkerTemplate", "workerTemplate")],
    "FlinkDeployment": [("spec", "podTemplate"), ("spec", "jobManager", "podTemplate"),
                        ("spec", "taskManager", "podTemplate")],
}
# KubeRay: the head's template here; every worker group's in RAY_WORKER_GROUPS (a list).
POD_TEMPLATE_PATHS.update({
    "RayCluster": [("spec", "headGroupSpec", "template")],
    "RayJob": [("spec", "rayClusterSpec", "headGroupSpec", "template"), ("spec", "submitterPodTemplate")],
})
RAY_WORKER_GROUPS: dict[str, tuple[str, ...]] = {"RayCluster": ("spec", "workerGroupSpecs"),
                                                 "RayJob": ("spec", "rayClusterSpec", "workerGroupSpecs")}

# KServe predictors are pod-spec-like (containers, volumes, securityContext inline).
INLINE_POD_PATHS: dict[str, list[tuple[str, ...]]] = {
    "InferenceService": [("spec", "predictor"), ("spec", "transformer")],
    "ServingRuntime": [("spec",)],
}

LONG_RUNNING = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "LeaderWorkerSet"}


def _walk(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


FLINK_MAIN = "flink-main-container"


def pod_specs(kind: str, props: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Yield (where, pod metadata, pod spec) for every pod template in the object."""
    for path in POD_TEMPLATE_PATHS.get(kind, []):
        template = _walk(props, path) if path else props
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            spec = template["spec"]
            if kind == "FlinkDeployment":
                spec = _flink_effective(props, path, spec)
            yield ".".join(path + ("spec",)), template.get("metadata") or {}, spec
    groups = _walk(props, RAY_WORKER_GROUPS[kind]) if kind in RAY_WORKER_GROUPS else None
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        template = group.get("template") if isinstance(group, dict) else None
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            yield f"{'.'.join(RAY_WORKER_GROUPS[kind])}[{i}].template.spec", template.get("metadata") or {}, template["spec"]
    for path in INLINE_POD_PATHS.get(kind, []):
        spec = _walk(props, path)
        if isinstance(spec, dict) and (spec.get("containers") or spec.get("model")):
            containers = list(spec.get("containers") or [])
            if isinstance(spec.get("model"), dict):
                containers.append({"name": "kserve-container", **spec["model"]})
            yield ".".join(path), {}, {**spec, "containers": containers}


def _flink_effective(props: dict[str, Any], path: tuple[str, ...], spec: dict[str, Any]) -> dict[str, Any]:
    """The Flink operator fills its main container's image and resources from the FlinkDeployment."""
    role = path[1] if len(path) > 2 else None  # jobManager / taskManager pod templates
    resource = (props.get("spec", {}).get(role) or {}).get("resource") if role else None
    resource = resource or (props.get("spec", {}).get("taskManager") or {}).get("resource") or {}
    merged = []
    for c in spec.get("containers") or []:
        if c.get("name") == FLINK_MAIN:
            c = dict(c)
            c.setdefault("image", props.get("spec", {}).get("image"))
            if resource and not c.get("resources"):
                amount = {"cpu": str(resource.get("cpu")), "memory": str(resource.get("memory"))}
                c["resources"] = {"requests": amount, "limits": amount}
        merged.append(c)
    return {**spec, "containers": merged}


def containers(spec: dict[str, Any], include_init: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    kinds = ("containers", "initContainers", "ephemeralContainers") if include_init else ("containers",)
    for kind in kinds:
        for c in spec.get(kind) or []:
            if isinstance(c, dict):
                yield f"{kind}[{c.get('name', '?')}]", c


def gpu_request(container: dict[str, Any]) -> int:
    res = container.get("resources") or {}
    for part in ("limits", "requests"):
        value = (res.get(part) or {}).get("nvidia.com/gpu")
        if value not in (None, "", 0, "0"):
            try:
                return int(value)
            except (TypeError, ValueError):
                return 1
    return 0
