"""Shared Pulumi mocks and cached program runs for the clusters/ and program/ tests.

Most component tests look at what the real program builds: `preview(spec, mode)` runs
`hybridml.program.main()` under the preview's recording mock monitor once per (spec, mode,
sites, config) per session and hands every test the same recorded resources.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMALL_SPEC

_CACHE: dict = {}


def preview(spec: str, mode: str = "cloud", sites: tuple[str, ...] | None = None, stack: str | None = None,
            config: tuple[tuple[str, str], ...] = ()):
    """Cached run_preview: the program under mocks (prod takes a while: solve + ~500 resources)."""
    from hybridml.ops.preview import run_preview

    key = (spec, mode, sites, stack, config)
    if key not in _CACHE:
        _CACHE[key] = run_preview(spec, mode=mode, sites=list(sites) if sites else None, stack=stack,
                                  config=dict(config))
    return _CACHE[key]


def write_spec(tmp_path: Path, spec: dict, name: str = "tiny.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@pytest.fixture(scope="session")
def tiny_spec_file(tmp_path_factory) -> str:
    return write_spec(tmp_path_factory.mktemp("spec"), copy.deepcopy(SMALL_SPEC))


def of_type(result, typ: str, site: str | None = None) -> list:
    """Resources of a type; with `site`, only those of that site's cluster component (not the workloads)."""
    return [r for r in result.resources if r.type == typ and (site is None or in_cluster(result, r, site))]


def in_cluster(result, r, site: str) -> bool:
    return result._component_site.get(r.urn) == site or (r.type.startswith("hybridml:clusters:") and r.name == site)


def cluster_counts(result, site: str):
    from collections import Counter

    return Counter(r.type for r in result.resources if in_cluster(result, r, site))


def where(r) -> str:
    """Failure messages name the URN, as pulumi/examples testing-unit-py does."""
    return f"{r.urn}"
