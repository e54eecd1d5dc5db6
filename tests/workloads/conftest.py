"""Renders of the shipped environments under Pulumi mocks, shared by the workloads tests (one per session)."""
from __future__ import annotations

import pytest

from infra.loader import load_environment
from policies.placement import solve
from tests.workloads.harness import Rendered, render

_CACHE: dict[str, Rendered] = {}


def rendered(name: str) -> Rendered:
    if name not in _CACHE:
        env = load_environment(name)
        plan = solve(env)
        _CACHE[name] = render(env, plan, simulated=(name == "local"))
    return _CACHE[name]


@pytest.fixture(scope="session")
def local_stack() -> Rendered:
    return rendered("local")


@pytest.fixture(scope="session")
def dev_stack() -> Rendered:
    return rendered("dev")


@pytest.fixture(scope="session")
def prod_stack() -> Rendered:
    return rendered("prod")
