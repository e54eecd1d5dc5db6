"""Decide where every pipeline runs: a MILP on HiGHS, an LP bound and a greedy baseline. Pure; imports only infra/.

`candidates` (per-site facts and costs) -> `shapes` (node shapes, pods and their slots: whole replicas on whole
nodes) -> `eligibility` (which sites at all) -> `rows` (capacity limits as typed keys) -> `solver` (build and
search) -> `explain` (the plan and its reasons) -> `packing` (first-fit decreasing check of a plan's nodes);
`greedy` is the baseline."""
from policies.placement.plan import PlacementPlan
from policies.placement.solver import solve

__all__ = ["PlacementPlan", "solve"]
