"""The fleet directory: one ConfigMap per cluster listing every site's gateway hostnames and the plan
they were deployed from, so gateways, clients and `hybridml status` can find their peers. Pure."""
from __future__ import annotations

import json
from typing import Any

from infra import labels as L
from infra.errors import HybridmlError
from workloads.render.meta import labels

NAME = "hybridml-fleet-directory"
KEY = "fleet.json"
PLAN_DIGEST_LABEL = f"{L.PREFIX}/plan-digest"
PUBLIC_FIELDS = ("kind", "hostnames", "fleet_hostname", "entry_for", "pipelines", "replicas")
COUNT_FIELDS = ("pipelines", "replicas")


class FleetMismatch(HybridmlError, ValueError):
    """Site stacks deployed from different plans: publishing a directory would mix two placements."""


def member(site: str, kind: str, plan_digest: str, workloads_site: dict[str, Any] | None,
           kubeconfig: Any = None, context: str | None = None) -> dict[str, Any]:
    """What a site (stack) tells the fleet about itself; `kubeconfig`/`context` say how to reach its cluster."""
    w = workloads_site or {}
    pipelines = w.get("pipelines", {})
    return {"site": site, "kind": kind, "plan_digest": plan_digest,
            "hostnames": list(w.get("hostnames", [])), "fleet_hostname": w.get("fleet_hostname"),
            "entry_for": list(w.get("entry_for", [])), "pipelines": len(pipelines),
            "replicas": sum(int(p.get("replicas", 0)) for p in pipelines.values()),
            "kubeconfig": kubeconfig, "context": context}


def directory(environment: str, plan_digest: str, members: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The directory's content; raises FleetMismatch naming the sites deployed from another plan."""
    stale = {s: m.get("plan_digest") for s, m in members.items() if m.get("plan_digest") != plan_digest}
    if stale:
        raise FleetMismatch(
            f"sites deployed from a different placement plan than the fleet's ({plan_digest}): "
            + ", ".join(f"{s} ({d or 'no plan'})" for s, d in sorted(stale.items()))
            + f"; run `hybridml up {environment}` (it rolls every site from one plan) before the fleet stack")
    return {"environment": environment, "plan_digest": plan_digest,
            "sites": {s: {k: _count(members[s].get(k)) if k in COUNT_FIELDS else members[s].get(k)
                          for k in PUBLIC_FIELDS} for s in sorted(members)}}


def _count(value: Any) -> Any:
    """Counts cross stacks (stack references) as protobuf doubles: 8 arrives as 8.0. The directory is the
    same whichever layout deployed it, so integral numbers are written as integers."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=1, sort_keys=True)


def config_map(namespace: str, plan_digest: str, rendered: Any) -> dict[str, Any]:
    """`rendered`: render(directory(...)), or a Pulumi Output of it (the content is known at deploy time)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": namespace,
                         "labels": {**labels(NAME, "fleet-directory"), PLAN_DIGEST_LABEL: plan_digest}},
            "data": {KEY: rendered}}
