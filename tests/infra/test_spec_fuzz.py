"""Fuzzing the spec inputs: every field of the shipped local and dev specs, mutated (types changed, signs
flipped, huge sizes, NaN/inf, deletions, duplicates, long strings, duplicate keys), must end in exit 0, 1
(infeasible, with a named reason) or 2 (file:line: field path: reason), never in a traceback, and quickly.

Deterministic (derandomized hypothesis, a fixed sweep) and bounded: HYBRIDML_FUZZ_EXAMPLES scales it.
"""
from __future__ import annotations

import copy
import math
import os
import re
import time
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hybridml.cli import app
from infra.errors import SpecError
from infra.loader import parse_environment
from tests.conftest import REPO

ENVIRONMENTS = REPO / "infra" / "environments"
SPECS = {name: yaml.safe_load((ENVIRONMENTS / f"{name}.yaml").read_text()) for name in ("local", "dev")}
EXAMPLES = int(os.environ.get("HYBRIDML_FUZZ_EXAMPLES", "120"))
SECONDS_PER_CASE = 10.0   # generous for a loaded 2-core CI machine; a case takes ~0.02 s (validate), ~0.5 s (plan)

# `  file:line: field.path[0]: reason` (the line is absent only where the input has none, e.g. a file too large)
ISSUE = re.compile(r"^  (?P<file>\S+?\.yaml)(?::(?P<line>\d+))?: (?P<path>[^:\s][^\s]*): (?P<reason>.+)$")
REASON = re.compile(r"^  - (pipeline [^:]+|fleet): \[[\w/-]+\] .+")


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            out += _paths(value, prefix + (i,))
    return out


PATHS = {name: _paths(tree)[1:] for name, tree in SPECS.items()}


def dump(tree: Any) -> str:
    return yaml.dump(tree, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, allow_unicode=True)

# value mutations: the current value -> the new one
VALUES = {
    "null": lambda v: None,
    "to_str": lambda v: "not-a-number" if isinstance(v, (int, float)) else "x",
    "to_int": lambda v: 7,
    "to_float": lambda v: 0.5,
    "to_bool": lambda v: True,
    "to_list": lambda v: [v],
    "to_map": lambda v: {"value": v},
    "negate": lambda v: -v if isinstance(v, (int, float)) and not isinstance(v, bool) else -1,
    "zero": lambda v: 0,
    "huge_int": lambda v: 10**30,
    "huge_float": lambda v: 1e308,
    "tiny_float": lambda v: 1e-300,
    "nan": lambda v: math.nan,
    "inf": lambda v: math.inf,
    "minus_inf": lambda v: -math.inf,
    "long_str": lambda v: "a" * 5000,
    "long_name": lambda v: "a" * 64,
    "bad_chars": lambda v: "Bad Name_ü\"'",
    "empty_str": lambda v: "",
    "empty_list": lambda v: [],
    "empty_map": lambda v: {},
}
STRUCTURE = ("delete", "duplicate")   # remove the key/item; repeat a list item (or the mapping's key, in the text)
MUTATIONS = tuple(VALUES) + STRUCTURE


def mutate(tree: Any, path: tuple, kind: str) -> bool:
    """Apply one mutation in place; False when the path no longer exists (an earlier mutation removed it)."""
    parent = tree
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return False
    last = path[-1]
    if isinstance(parent, dict) and last not in parent or isinstance(parent, list) and not (
            isinstance(last, int) and last < len(parent)) or not isinstance(parent, (dict, list)):
        return False
    if kind == "delete":
        del parent[last]
    elif kind == "duplicate":
        if isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
        else:
            parent[last] = [parent[last], copy.deepcopy(parent[last])]
    else:
        parent[last] = VALUES[kind](parent[last])
    return True


def duplicate_key_line(text: str, pick: int) -> str:
    """The YAML text with one `key: ...` line repeated right after itself (a duplicate key in that mapping)."""
    lines = text.splitlines()
    keyed = [i for i, line in enumerate(lines) if re.match(r"^\s*[\w.-]+:", line)]
    i = keyed[pick % len(keyed)]
    return "\n".join(lines[: i + 1] + [lines[i]] + lines[i + 1:]) + "\n"


@st.composite
def mutated(draw: st.DrawFn, names: tuple[str, ...]) -> tuple[str, str, list[str]]:
    name = draw(st.sampled_from(names))
    tree = copy.deepcopy(SPECS[name])
    done = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS[name]))
        kind = draw(st.sampled_from(MUTATIONS))
        if mutate(tree, path, kind):
            done.append(f"{kind} {'.'.join(map(str, path))}")
    text = dump(tree)
    if draw(st.integers(0, 9)) == 0:
        text = duplicate_key_line(text, draw(st.integers(0, 10_000)))
        done.append("duplicate key line")
    return name, text, done


def _get(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


NUMERIC = {name: [p for p in paths if _is_number(_get(SPECS[name], p))] for name, paths in PATHS.items()}
# numbers stay numbers, so that most cases get past validation and into the solver
SCALES = (2, 10, 0.5, 1000, 0.001, 1e6, 0)


@st.composite
def rescaled(draw: st.DrawFn, name: str) -> tuple[str, str, list[str]]:
    tree = copy.deepcopy(SPECS[name])
    done = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(NUMERIC[name]))
        factor = draw(st.sampled_from(SCALES))
        parent = _get(tree, path[:-1])
        old = parent[path[-1]]
        parent[path[-1]] = type(old)(old * factor) if isinstance(old, int) else old * factor
        done.append(f"x{factor} {'.'.join(map(str, path))}")
    return name, dump(tree), done


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("fuzz")


def run_cli(args: list[str]) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, args)
    elapsed = time.perf_counter() - t0
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: raised {type(result.exception).__name__}: {result.exception}")
    return result.exit_code, result.output, elapsed


def assert_clean_outcome(code: int, output: str, elapsed: float, file: str, allowed: tuple[int, ...], what: list[str]) -> None:
    context = f"mutations {what}:\n{output}"
    assert code in allowed, context
    assert "Traceback" not in output, context
    assert elapsed < SECONDS_PER_CASE, f"took {elapsed:.1f} s; " + context
    if code == 2:
        issues = [m for m in map(ISSUE.match, output.splitlines()) if m]
        assert issues, "exit 2 without a file: field: reason line; " + context
        assert all(m["file"] == file for m in issues), context
    elif code == 1:
        assert "infeasible:" in output and any(REASON.match(line) for line in output.splitlines()), context


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated(("local", "dev")))
def test_validate_never_crashes(workdir, case):
    name, text, what = case
    spec = workdir / f"{name}-fuzz.yaml"
    spec.write_text(text)
    code, output, elapsed = run_cli(["validate", str(spec)])
    assert_clean_outcome(code, output, elapsed, str(spec), (0, 2), what)


@settings(max_examples=max(EXAMPLES // 4, 5), deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=st.one_of(rescaled("local"), rescaled("dev"), mutated(("local",))))
def test_plan_never_crashes(workdir, case):
    name, text, what = case
    spec = workdir / f"{name}-fuzz-plan.yaml"
    spec.write_text(text)
    code, output, elapsed = run_cli(["plan", str(spec), "--time-limit", "5"])
    assert_clean_outcome(code, output, elapsed, str(spec), (0, 1, 2), what)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_field_mutated(name):
    """A sweep with no sampling: every path of the spec gets its mutations (rotating through all kinds; two per
    path on local, one on the twice as large dev), each parsed on its own. Each ends valid or in a SpecError whose
    every issue names the file and a field path."""
    outcomes = {"ok": 0, "error": 0}
    for i, path in enumerate(PATHS[name]):
        kinds = (MUTATIONS[i % len(MUTATIONS)], MUTATIONS[(i * 7 + 3) % len(MUTATIONS)])
        for kind in kinds[: 2 if name == "local" else 1]:
            tree = copy.deepcopy(SPECS[name])
            assert mutate(tree, path, kind)
            text = dump(tree)
            t0 = time.perf_counter()
            try:
                parse_environment(text, f"{name}-sweep.yaml")
                outcomes["ok"] += 1
            except SpecError as exc:
                outcomes["error"] += 1
                assert exc.issues, (kind, path)
                for issue in exc.issues:
                    rendered = issue.render(exc.file)
                    assert rendered.startswith(f"{name}-sweep.yaml"), rendered
                    assert issue.message, (kind, path, rendered)
            assert time.perf_counter() - t0 < SECONDS_PER_CASE, (kind, path)
    # the sweep exercises both outcomes, most of all the errors
    assert outcomes["error"] > outcomes["ok"] > 0, outcomes
