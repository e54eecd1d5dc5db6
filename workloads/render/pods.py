"""Pod building blocks under Pod Security Standards `restricted`: security contexts, resources, probes.

Every pod of the serving stack is built from these, so one place decides what `restricted` means:
runAsNonRoot with a high UID, seccomp RuntimeDefault, all capabilities dropped, no privilege
escalation, read-only root filesystem (writable paths are explicit emptyDirs), no service-account
token unless the pod talks to the API server, requests = limits.
"""
from __future__ import annotations

import math

UID = 10001  # above 10000: never collides with a host user (checkov CKV_K8S_40)


def pod_security_context(uid: int = UID) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(uid: int = UID) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def cpu_quantity(cores: float) -> str:
    milli = int(round(cores * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity(gib: float) -> str:
    mib = int(math.ceil(gib * 1024))
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def resources(cpu: float, memory_gib: float, gpus: int = 0, gpu_resource: str = "nvidia.com/gpu") -> dict:
    """Requests equal to limits (Guaranteed QoS): what the placement solver counted is what the pod holds."""
    q = {"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory_gib)}
    if gpus:
        q[gpu_resource] = str(gpus)
    return {"requests": dict(q), "limits": dict(q)}


def http_probe(path: str, port: int | str, *, period: int = 10, failures: int = 3, timeout: int = 5,
               initial_delay: int = 0) -> dict:
    probe = {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failures,
             "timeoutSeconds": timeout}
    if initial_delay:
        probe["initialDelaySeconds"] = initial_delay
    return probe


def exec_probe(command: list[str], *, period: int = 10, failures: int = 3, timeout: int = 5) -> dict:
    return {"exec": {"command": list(command)}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": timeout}


def tcp_probe(port: int | str, *, period: int = 10, failures: int = 3, timeout: int = 5) -> dict:
    return {"tcpSocket": {"port": port}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": timeout}


def empty_dir(name: str, *, memory: bool = False, size_limit: str | None = None) -> dict:
    spec: dict = {}
    if memory:
        spec["medium"] = "Memory"
    if size_limit:
        spec["sizeLimit"] = size_limit
    return {"name": name, "emptyDir": spec}


def container(name: str, image: str, *, args: list[str] | None = None, command: list[str] | None = None,
              ports: list[dict] | None = None, env: list[dict] | None = None, res: dict,
              readiness: dict | None, liveness: dict | None, startup: dict | None = None,
              mounts: list[dict] | None = None, uid: int = UID) -> dict:
    c: dict = {"name": name, "image": image, "imagePullPolicy": "Always",
               "securityContext": container_security_context(uid), "resources": res}
    if command:
        c["command"] = list(command)
    if args:
        c["args"] = list(args)
    if ports:
        c["ports"] = list(ports)
    if env:
        c["env"] = list(env)
    if readiness:
        c["readinessProbe"] = readiness
    if liveness:
        c["livenessProbe"] = liveness
    if startup:
        c["startupProbe"] = startup
    if mounts:
        c["volumeMounts"] = list(mounts)
    return c


def pod_spec(containers: list[dict], *, volumes: list[dict] | None = None, init_containers: list[dict] | None = None,
             node_selector: dict | None = None, affinity: dict | None = None, tolerations: list[dict] | None = None,
             spread: list[dict] | None = None, service_account: str | None = None,
             termination_grace: int | None = None, priority_class: str | None = None, uid: int = UID) -> dict:
    spec: dict = {
        "automountServiceAccountToken": service_account is not None,
        "securityContext": pod_security_context(uid),
        "enableServiceLinks": False,
        "containers": containers,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if init_containers:
        spec["initContainers"] = init_containers
    if volumes:
        spec["volumes"] = volumes
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if affinity:
        spec["affinity"] = affinity
    if tolerations:
        spec["tolerations"] = tolerations
    if spread:
        spec["topologySpreadConstraints"] = spread
    if termination_grace is not None:
        spec["terminationGracePeriodSeconds"] = termination_grace
    if priority_class:
        spec["priorityClassName"] = priority_class
    return spec


# Named, documented exemptions from the baseline above (policy rules read this table).
READ_ONLY_ROOT_EXEMPT = {
    "flink": "Flink's entrypoint rewrites conf/ under the image's FLINK_HOME at start; the FlinkDeployment "
             "pods keep every `restricted` control except a read-only root filesystem.",
}
