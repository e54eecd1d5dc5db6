"""Decide where every pipeline runs: a MILP on HiGHS, an LP bound and a greedy baseline. Pure; imports only infra/.

`candidates` (per-site facts and costs) -> `shapes` (node shapes, pods and their slots: whole replicas on whole
nodes) -> `eligibility` (which sites at all) -> `rows` (capacity limits as typed keys) -> `solver` (build and
search) -> `explain` (the plan and its reasons) -> `packing` (first-fit decreasing check of a plan's nodes);
`greedy` is the baseline. `batch` is a second stage: batch pipelines on the capacity the online plan leaves.
"""
from __future__ import annotations

from infra.spec import Environment
from policies.placement import solver
from policies.placement.batch import place_batch
from policies.placement.plan import PlacementPlan


def solve(env: Environment, *, time_limit: float = 60.0, mip_gap: float = solver.DEFAULT_MIP_GAP) -> PlacementPlan:
    """The placement plan of a spec: the online pipelines and data (`solver.solve`), then its batch pipelines on
    what that leaves (`batch.place_batch`). Raises PlacementInfeasible with reasons when either stage has none."""
    plan = solver.solve(env, time_limit=time_limit, mip_gap=mip_gap)
    return place_batch(env, plan, time_limit=time_limit)


__all__ = ["PlacementPlan", "solve"]
