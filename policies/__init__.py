"""Placement (policies/placement) and the policy rules checked at preview and in CI."""
