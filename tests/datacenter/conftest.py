"""Fixtures of the datacenter tests: the shipped local spec, its dc-local inventory, overrides builders."""
from __future__ import annotations

import textwrap

import pytest

from infra.loader import load_environment


@pytest.fixture(scope="session")
def local_env():
    return load_environment("local")


@pytest.fixture(scope="session")
def local_inventory(local_env):
    from datacenter.inventory import build_inventory

    return build_inventory(local_env, "dc-local")


def overrides(text: str, file: str = "overrides.yaml"):
    from datacenter.inventory import parse_overrides

    return parse_overrides(textwrap.dedent(text), file)
