"""KEDA's replica floor on a simulated cluster: the HorizontalPodAutoscaler KEDA would own.

The local control planes run no KEDA operator (its scalers query Prometheus, and no model server
runs to fill it). Without one a ScaledObject is inert, and the program leaves `spec.replicas` of a
scaled workload to the autoscaler once the workload exists, so a plan that raises a pipeline's
floor (`minReplicaCount`) never reached its Deployment or LeaderWorkerSet: `hybridml status sim`
found 11 of 250 pipelines short of the plan after a re-plan.

This stand-in does the part of KEDA that needs no metrics. For every ScaledObject it applies the
HPA that KEDA creates (`keda-hpa-<name>`: the same target, `minReplicas` max(1, minReplicaCount),
`maxReplicas`, the ScaledObject's HPA behaviour, one External metric per trigger, owned by the
ScaledObject so the garbage collector removes it with it). The cluster's own HPA controller then
keeps the target between the two bounds, as on a real cluster. With no external-metrics API it
never scales on load, and activation (to and from zero replicas) is not simulated: a scale-to-zero
workload keeps at least one replica.

Runs as one more supervised process per local control plane (`python -m hybridml.local.keda_sim`),
polling the ScaledObjects' metadata from the API server's watch cache every few seconds and fetching
and applying only those whose generation it has not applied yet.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import sys
import time
from typing import Any

from .kubeapi import KubeAPI, KubeAPIError

SCALEDOBJECTS = "/apis/keda.sh/v1alpha1/scaledobjects"
HPAS = "/apis/autoscaling/v2/horizontalpodautoscalers"
FIELD_MANAGER = "keda-operator"  # the HPA's fields belong to "KEDA", as on a real cluster
SO_NAME_LABEL = "scaledobject.keda.sh/name"
MANAGED_BY = ("app.kubernetes.io/managed-by", "keda-operator")
APPLIED_ANNOTATION = "hybridml.io/simulated-from"  # "<ScaledObject uid>/<generation>" it was built from
DEFAULT_MAX_REPLICAS = 100  # KEDA's default maxReplicaCount
POLL_SECONDS = 10.0


def hpa_name(scaled_object_name: str) -> str:
    return f"keda-hpa-{scaled_object_name}"


def hpa_for(scaled_object: dict[str, Any]) -> dict[str, Any]:
    """The HPA KEDA creates for a ScaledObject (keda pkg/scaling/hpa.go, without the metric values)."""
    meta, spec = scaled_object["metadata"], scaled_object.get("spec") or {}
    name, namespace = meta["name"], meta["namespace"]
    target = spec.get("scaleTargetRef") or {}
    max_replicas = int(spec.get("maxReplicaCount", DEFAULT_MAX_REPLICAS))
    min_replicas = min(max(1, int(spec.get("minReplicaCount") or 0)), max_replicas)
    metrics = [
        {"type": "External", "external": {
            "metric": {"name": f"s{i}-{trigger.get('type', 'trigger')}",
                       "selector": {"matchLabels": {SO_NAME_LABEL: name}}},
            "target": {"type": "AverageValue",
                       "averageValue": str((trigger.get("metadata") or {}).get("threshold", "1"))}}}
        for i, trigger in enumerate(spec.get("triggers") or [])
    ]
    hpa_spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": target.get("apiVersion", "apps/v1"),
                           "kind": target.get("kind", "Deployment"), "name": target["name"]},
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "metrics": metrics,
    }
    behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")
    if behavior:
        hpa_spec["behavior"] = behavior
    labels = {**(meta.get("labels") or {}), MANAGED_BY[0]: MANAGED_BY[1],
              "app.kubernetes.io/name": hpa_name(name), "app.kubernetes.io/part-of": name, SO_NAME_LABEL: name}
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": hpa_name(name), "namespace": namespace, "labels": labels,
            "annotations": {APPLIED_ANNOTATION: f"{meta['uid']}/{meta.get('generation', 1)}"},
            "ownerReferences": [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": name,
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": hpa_spec,
    }


class Reconciler:
    """Applies the HPA of every ScaledObject whose current generation it has not applied yet."""

    def __init__(self, api: KubeAPI, log: Any = print):
        self.api, self.log = api, log
        self.applied: dict[str, str] | None = None   # ScaledObject uid -> "uid/generation" applied

    def _already_applied(self) -> dict[str, str]:
        hpas = self.api.list_metadata(HPAS, {"labelSelector": "=".join(MANAGED_BY), "resourceVersion": "0"})
        out = {}
        for h in hpas:
            mark = (h["metadata"].get("annotations") or {}).get(APPLIED_ANNOTATION, "")
            if "/" in mark:
                out[mark.split("/", 1)[0]] = mark
        return out

    def once(self) -> int:
        """One pass; returns how many HPAs it applied. Raises KubeAPIError 404 while KEDA's CRD is absent."""
        if self.applied is None:
            self.applied = self._already_applied()
        objects = self.api.list_metadata(SCALEDOBJECTS, {"resourceVersion": "0"})
        seen, count = set(), 0
        for so in objects:
            meta = so["metadata"]
            uid, mark = meta["uid"], f"{meta['uid']}/{meta.get('generation', 1)}"
            seen.add(uid)
            if self.applied.get(uid) == mark or meta.get("deletionTimestamp"):
                continue
            full = self.api.get_or_none(f"/apis/keda.sh/v1alpha1/namespaces/{meta['namespace']}"
                                        f"/scaledobjects/{meta['name']}")
            if full is None:
                continue
            hpa = hpa_for(full)
            self.api.apply(f"/apis/autoscaling/v2/namespaces/{meta['namespace']}/horizontalpodautoscalers/"
                           f"{hpa['metadata']['name']}", hpa, field_manager=FIELD_MANAGER)
            self.applied[uid] = hpa["metadata"]["annotations"][APPLIED_ANNOTATION]
            count += 1
            self.log(f"{meta['namespace']}/{hpa['metadata']['name']}: {hpa['spec']['scaleTargetRef']['kind']} "
                     f"{hpa['spec']['scaleTargetRef']['name']} kept within "
                     f"[{hpa['spec']['minReplicas']}, {hpa['spec']['maxReplicas']}]")
        for uid in set(self.applied) - seen:  # deleted: the garbage collector removes its HPA
            del self.applied[uid]
        return count


def run(api: KubeAPI, *, poll: float = POLL_SECONDS, log: Any = print) -> None:
    reconciler, waiting_for_crd = Reconciler(api, log), False
    while True:
        try:
            reconciler.once()
            waiting_for_crd = False
        except KubeAPIError as e:
            if e.status == 404:
                if not waiting_for_crd:
                    log("no ScaledObject API (KEDA's CRD not installed yet): waiting")
                waiting_for_crd = True
            else:
                log(f"error: {e}")
        except (OSError, http.client.HTTPException, ValueError) as e:  # apiserver restarting or overloaded: next round
            log(f"error: {e}")
            api.close()
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    from .controlplane import api_client

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--poll", type=float, default=POLL_SECONDS)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def log(msg: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}", flush=True)

    log(f"simulating KEDA's HPAs on {args.cluster} (no metrics: replicas stay within the ScaledObjects' bounds)")
    run(api_client(args.cluster, args.state_dir), poll=args.poll, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
