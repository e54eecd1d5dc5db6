"""Does a plan fit its nodes pod by pod? First-fit decreasing into the nodes each shape of a site buys or has. Pure.

`first_fit_decreasing` packs pods into identical nodes: GPU pods first, then the others, each kind biggest
first (its largest share of the node room its kind may use), every pod into the first node with room for
it in GPUs, cores and memory. `packing_problems(env, plan)` checks a whole plan with it: the node groups
account for every replica and data pod, each pod sits on a shape it may use, and each group's pods pack
into its nodes. The solver's plans pass by construction (README "Placement", packing); the tests and
`solve` itself check it on every plan.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from infra.dataflow import effective_tier
from infra.spec import CloudSite, Datacenter, Environment, PrivacyTier
from policies.placement import candidates as cand
from policies.placement import shapes
from policies.placement.plan import NodeGroup, PlacementPlan
from policies.placement.shapes import EPS, Need, NodeShape


@dataclass(frozen=True)
class Pods:
    """`count` identical pods of one item (a pipeline's replicas, a data piece)."""

    name: str
    need: Need
    count: int


def _order(shape: NodeShape, pods: Sequence[Pods]) -> list[Pods]:
    """GPU pods first, then the others; within each, by the largest share of the room that kind may use."""
    def share(p: Pods) -> float:
        room = shape.part(p.need.gpus > 0) if shape.instance is None else shape.allocatable
        if room.cores <= EPS or room.memory_gib <= EPS:
            room = shape.allocatable
        parts = [p.need.cores / room.cores, p.need.memory_gib / room.memory_gib]
        if p.need.gpus and room.gpus:
            parts.append(p.need.gpus / room.gpus)
        return max(parts)

    return sorted(pods, key=lambda p: (p.need.gpus == 0, -share(p), p.name))


def pack(shape: NodeShape, nodes: int, pods: Sequence[Pods]) -> tuple[np.ndarray, dict[str, int]]:
    """Pack `pods` into `nodes` nodes of `shape`, first fit, biggest first (`_order`). Returns the room left per node
    (GPUs, cores, GiB) and, per item, how many of its pods found no node with room (empty: everything packed)."""
    a = shape.allocatable
    room = np.tile(np.array([float(a.gpus), a.cores, a.memory_gib]), (max(nodes, 0), 1))
    left: dict[str, int] = {}
    for group in _order(shape, pods):
        need = np.array([float(group.need.gpus), group.need.cores, group.need.memory_gib])
        todo, start = group.count, 0
        while todo and start < len(room):
            fits = np.all(room[start:] >= need - EPS, axis=1)
            if not fits.any():
                break
            j = start + int(np.argmax(fits))
            # identical pods go one by one into the first node with room: as many as fit on node j
            here = min(todo, *(int((room[j, d] + EPS) // need[d]) for d in range(3) if need[d] > 0))
            room[j] -= here * need
            todo -= here
            start = j + 1
        if todo:
            left[group.name] = left.get(group.name, 0) + todo
    return room, left


def first_fit_decreasing(shape: NodeShape, nodes: int, pods: Sequence[Pods]) -> dict[str, int]:
    """Per item, how many of its pods found no node with room when packed by `pack` (empty: everything packed)."""
    return pack(shape, nodes, pods)[1]


class _Lookup:
    """Pod needs, GPU types and tiers of a spec's items, looked up once per check."""

    def __init__(self, env: Environment):
        self.env = env
        self.pipelines = {p.name: p for p in env.pipelines}
        self.pieces = cand.data_pieces(env)

    def pods(self, site: CloudSite | Datacenter, item: str) -> tuple[int, Need]:
        if ":" in item:
            piece = self.pieces[item]
            return piece.pods, Need(0, piece.cpu / piece.pods, piece.memory_gib / piece.pods)
        return shapes.pipeline_pod(self.pipelines[item], site)

    def gpu_type(self, item: str) -> str | None:
        gpu = None if ":" in item else self.pipelines[item].gpu
        return gpu.type if gpu else None

    def tier(self, item: str) -> PrivacyTier:
        return self.pieces[item].tier if ":" in item else effective_tier(self.env, item)


def group_problems(env: Environment, site: CloudSite | Datacenter, group: NodeGroup, look: _Lookup | None = None) -> list[str]:
    """Whether one node group's pods may go there and pack into its nodes by first-fit decreasing."""
    look = look or _Lookup(env)
    shape = next((s for s in shapes.site_packing(env, site).shapes if s.key == group.shape), None)
    if shape is None:
        return [f"{site.name}: unknown node shape {group.shape!r}"]
    out = []
    if shape.hosts is not None and group.nodes != shape.hosts:
        out.append(f"{site.name}/{group.shape}: {group.nodes} nodes, but the spec has {shape.hosts}")
    home = cand.datacenter_capacity(site).home if isinstance(site, Datacenter) else {}
    pods = []
    for item, count in group.pods.items():
        need = look.pods(site, item)[1]
        tier = look.tier(item)
        if need.gpus and look.gpu_type(item) != shape.gpu_type:
            out.append(f"{site.name}/{group.shape}: {item} needs nodes with its GPU type {look.gpu_type(item)}")
        elif not need.gpus and shape.instance is not None and shape.allocatable.gpus:
            out.append(f"{site.name}/{group.shape}: non-GPU pods of {item} on GPU nodes (they are tainted)")
        elif shape.zone is not None and home.get(tier.rank) != shape.zone.rank:
            out.append(f"{site.name}/{group.shape}: {item} ({tier.value}) outside its home zone")
        pods.append(Pods(item, need, count))
    for item, n in sorted(first_fit_decreasing(shape, group.nodes, pods).items()):
        out.append(f"{site.name}/{group.shape}: {n} pod(s) of {item} fit none of the {group.nodes} node(s) "
                   "(first-fit decreasing)")
    return out


def packing_problems(env: Environment, plan: PlacementPlan) -> list[str]:
    """Everything that keeps the plan's pods from fitting its nodes (empty: it packs). Per site: the node
    groups hold every replica's pods and every data piece's pods, cloud groups the nodes the plan buys,
    and each group packs by first-fit decreasing."""
    out: list[str] = []
    look = _Lookup(env)
    for sp in plan.sites:
        site = env.site(sp.name)
        want: dict[str, int] = {p: n * look.pods(site, p)[0] for p, n in sp.pipelines.items()}
        want.update({d: look.pods(site, d)[0] for d in sp.data})
        got: dict[str, int] = {}
        for group in sp.node_groups:
            for item, n in group.pods.items():
                got[item] = got.get(item, 0) + n
            if isinstance(site, CloudSite) and group.nodes != sp.nodes.get(group.shape, 0):
                out.append(f"{sp.name}/{group.shape}: {group.nodes} nodes, but the plan buys {sp.nodes.get(group.shape, 0)}")
            out.extend(group_problems(env, site, group, look))
        for item in sorted(set(want) | set(got)):
            if want.get(item, 0) != got.get(item, 0):
                out.append(f"{sp.name}: {item} has {want.get(item, 0)} pod(s) placed but {got.get(item, 0)} on its node groups")
        if isinstance(site, CloudSite):
            for it, n in sorted(sp.nodes.items()):
                if n and not any(g.shape == it for g in sp.node_groups):
                    out.append(f"{sp.name}: buys {n} {it} node(s) that no node group lists")
    return out
