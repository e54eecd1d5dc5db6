"""Decide where every pipeline runs: a MILP on HiGHS, an LP bound and a greedy baseline."""
from policies.placement.plan import PlacementPlan
from policies.placement.solver import solve

__all__ = ["PlacementPlan", "solve"]
