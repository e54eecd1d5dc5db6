"""Find every pod template in rendered objects (core workloads and the CRs that embed pods) and check it
against Pod Security Standards `restricted` and the stack's baseline."""
from __future__ import annotations

from dataclasses import dataclass

from workloads.images import is_pinned
from workloads.render.pods import READ_ONLY_ROOT_EXEMPT

RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


@dataclass
class PodTemplate:
    where: str
    labels: dict
    spec: dict                 # pod-level fields
    containers: list[dict]     # containers + init containers
    needs_probes: bool = True
    exempt_readonly: str | None = None


def pod_templates(m: dict) -> list[PodTemplate]:
    kind, spec = m.get("kind"), m.get("spec", {})
    name = f"{kind}/{m.get('metadata', {}).get('name')}"
    out = []

    def add(where, tmpl, probes=True, exempt=None):
        s = tmpl.get("spec", {})
        out.append(PodTemplate(where, tmpl.get("metadata", {}).get("labels", {}), s,
                               list(s.get("containers", [])) + list(s.get("initContainers", [])), probes, exempt))

    if kind in ("Deployment", "StatefulSet"):
        add(name, spec["template"])
    elif kind == "Job":
        add(name, spec["template"], probes=False)
    elif kind == "CronJob":
        add(name, spec["jobTemplate"]["spec"]["template"], probes=False)
    elif kind == "LeaderWorkerSet":
        lwt = spec["leaderWorkerTemplate"]
        add(f"{name}/leader", lwt["leaderTemplate"])
        add(f"{name}/worker", lwt["workerTemplate"])
    elif kind == "InferenceService":
        pred = dict(spec["predictor"])
        model = dict(pred.pop("model"))
        model.setdefault("name", "kserve-container")
        model.setdefault("image", "(ServingRuntime)")
        out.append(PodTemplate(f"{name}/predictor", m["metadata"].get("labels", {}), pred, [model]))
    elif kind == "ServingRuntime":
        out.append(PodTemplate(name, m["metadata"].get("labels", {}), {"securityContext": {"runAsNonRoot": True,
                               "seccompProfile": {"type": "RuntimeDefault"}}}, list(spec["containers"])))
    elif kind in ("RayCluster", "RayJob"):
        # KubeRay adds its own probes to the Ray containers (and the autoscaler sidecar, from autoscalerOptions)
        cluster = spec["rayClusterSpec"] if kind == "RayJob" else spec
        add(f"{name}/head", cluster["headGroupSpec"]["template"], probes=False)
        for g in cluster.get("workerGroupSpecs", []):
            add(f"{name}/{g['groupName']}", g["template"], probes=False)
        if "autoscalerOptions" in cluster:
            o = cluster["autoscalerOptions"]
            head = cluster["headGroupSpec"]["template"]
            out.append(PodTemplate(f"{name}/autoscaler", head.get("metadata", {}).get("labels", {}), head["spec"],
                                   [{"name": "autoscaler", "securityContext": o["securityContext"],
                                     "resources": o["resources"]}], needs_probes=False))
        if kind == "RayJob":
            add(f"{name}/submitter", spec["submitterPodTemplate"], probes=False)
    elif kind == "FlinkDeployment":
        pt = {**spec["podTemplate"], "spec": {**spec["podTemplate"]["spec"], "serviceAccountName": spec["serviceAccount"]}}
        add(name, pt, probes=False, exempt="flink")
    return out


def restricted_violations(t: PodTemplate) -> list[str]:
    """Pod Security Standards `restricted` (v1.33) plus the stack baseline. Empty list: compliant."""
    errs = []
    s = t.spec
    psc = s.get("securityContext", {})
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if s.get(f):
            errs.append(f"{f} set")
    for v in s.get("volumes", []):
        types = set(v) - {"name"}
        if not types <= RESTRICTED_VOLUMES:
            errs.append(f"volume {v['name']} of type {types - RESTRICTED_VOLUMES}")
    if s.get("automountServiceAccountToken") is not False and "serviceAccountName" not in s and "ServingRuntime" not in t.where:
        errs.append("service account token mounted without a service account that needs it")
    for c in t.containers:
        csc = c.get("securityContext", {})
        cname = c.get("name")
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            errs.append(f"{cname}: runAsNonRoot not true")
        if csc.get("runAsUser", psc.get("runAsUser", 1)) == 0:
            errs.append(f"{cname}: runAsUser 0")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            errs.append(f"{cname}: seccompProfile {seccomp}")
        if csc.get("allowPrivilegeEscalation") is not False:
            errs.append(f"{cname}: allowPrivilegeEscalation not false")
        if csc.get("privileged"):
            errs.append(f"{cname}: privileged")
        caps = csc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            errs.append(f"{cname}: capabilities not dropping ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            errs.append(f"{cname}: adds capabilities {caps['add']}")
        if csc.get("readOnlyRootFilesystem") is not True and t.exempt_readonly not in READ_ONLY_ROOT_EXEMPT:
            errs.append(f"{cname}: root filesystem writable")
        image = c.get("image", "")
        if image and not image.startswith("(") and not is_pinned(image):
            errs.append(f"{cname}: image {image} not pinned")
        res = c.get("resources")
        if res is not None or t.needs_probes:
            res = res or {}
            for r in ("cpu", "memory"):
                if r not in res.get("requests", {}) or r not in res.get("limits", {}):
                    errs.append(f"{cname}: no {r} request/limit")
            for r, q in res.get("limits", {}).items():
                if res.get("requests", {}).get(r) != q:
                    errs.append(f"{cname}: {r} request {res.get('requests', {}).get(r)} != limit {q}")
        if t.needs_probes and cname not in {ic.get("name") for ic in s.get("initContainers", [])}:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    errs.append(f"{cname}: no {probe}")
    return errs
