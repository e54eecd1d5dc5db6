"""Inputs fingerprints (hybridml/fingerprint.py) and the preview that skips unchanged stacks with them
(`hybridml preview ENV --engine --skip-unchanged`; the real engine run is in tests/e2e/test_local_stack.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from pulumi import automation as auto

from hybridml import fingerprint, rollout
from hybridml.shards import StackSpec

FILES = {"hybridml/program.py": b"print(1)", "infra/spec.py": b"x = 1"}
VERSIONS = {"pulumi": "3.260.0"}
CONFIG = {"hybridml:spec": "infra/environments/local.yaml", "hybridml:sites": '["aws-use1"]'}


def test_the_same_inputs_give_the_same_fingerprint_whatever_the_json_layout():
    spaced = {**CONFIG, "hybridml:sites": '[ "aws-use1" ]'}      # the Automation API and the engine format
    assert fingerprint.fingerprint(CONFIG, FILES, VERSIONS) == fingerprint.fingerprint(spaced, dict(reversed(
        list(FILES.items()))), VERSIONS)


@pytest.mark.parametrize("change", [
    lambda c, f, v: ({**c, "hybridml:secretSeed": "rotated"}, f, v),          # a (secret) config value
    lambda c, f, v: ({**c, "hybridml:sites": '["aws-usw2"]'}, f, v),
    lambda c, f, v: (c, {**f, "infra/spec.py": b"x = 2"}, v),                 # the program's source
    lambda c, f, v: (c, {**f, "workloads/new.py": b""}, v),
    lambda c, f, v: (c, f, {"pulumi": "3.261.0"}),                           # an SDK
])
def test_any_input_changes_it(change):
    assert fingerprint.fingerprint(*change(CONFIG, FILES, VERSIONS)) != fingerprint.fingerprint(CONFIG, FILES, VERSIONS)


def test_the_program_inputs_cover_source_project_files_spec_and_plan(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text("name: hybridml\n")
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    files, versions = fingerprint.program_inputs(tmp_path, {"hybridml:spec": "local", "hybridml:plan": str(plan)})
    assert "hybridml/fingerprint.py" in files and "Pulumi.yaml" in files
    assert files[f"hybridml:plan={plan}"] == b"{}"
    assert any(k.startswith("hybridml:spec=") for k in files)                # a shipped name resolves
    assert set(versions) == set(fingerprint.DISTRIBUTIONS) and versions["pulumi"] != "absent"


def test_the_offline_preview_exports_it_as_a_secret():
    from hybridml.preview import resolved_exports, run_preview

    result = run_preview("dev", stack="fingerprint-dev")
    values, secret = resolved_exports(result, (fingerprint.EXPORT,))
    assert len(values[fingerprint.EXPORT]) == 64 and fingerprint.EXPORT in secret


class RecordedStack:
    """An Automation API stack whose last update, outputs and config are scripted (no engine)."""

    def __init__(self, result="succeeded", recorded=None, config=None):
        self.config = config or {"hybridml:spec": auto.ConfigValue("infra/environments/local.yaml"),
                                 "hybridml:mode": auto.ConfigValue("local")}
        self.result, self.recorded = result, recorded
        self.previews = 0

    def info(self):
        return SimpleNamespace(kind="update", result=self.result, end_time="yesterday", start_time="yesterday")

    def outputs(self):
        return {fingerprint.EXPORT: auto.OutputValue(self.recorded, True)} if self.recorded else {}

    def get_all_config(self):
        return self.config

    def set_all_config(self, config):
        pass

    def export_stack(self):
        return SimpleNamespace(deployment={})

    def preview(self, **kw):
        self.previews += 1


def _current(stack) -> str:
    config = {**rollout.project_config_defaults(), **{k: v.value for k, v in stack.config.items()}}
    return fingerprint.inputs_fingerprint(config, rollout.project_dir())


@pytest.fixture
def scripted(monkeypatch):
    def make(**kw):
        stack = RecordedStack(**kw)
        monkeypatch.setattr(auto.Stack, "create_or_select", staticmethod(lambda name, ws: stack))
        monkeypatch.setattr(rollout, "_clear_stale_locks", lambda name, out: 0)
        monkeypatch.setattr(rollout, "_resource_count", lambda name, ws: 42)
        return stack
    return make


SITE = StackSpec(name="local-aws-use1", role="site", sites=("aws-use1",), config={})


def test_an_unchanged_stack_is_reported_same_without_the_engine(scripted):
    stack = scripted()
    stack.recorded = _current(stack)
    run = rollout.StackRun(SITE.name, SITE.role)
    rollout.run_stack(SITE, "preview", None, run, skip_unchanged=True)
    assert (run.state, run.changes, stack.previews) == ("ok", {"same": 42}, 0)
    assert "engine not run" in run.note


@pytest.mark.parametrize("case,why", [
    ({"recorded": "0" * 64}, "inputs changed"),
    ({"recorded": None}, "no inputs fingerprint"),
    ({"result": "failed"}, "did not succeed"),
])
def test_otherwise_the_engine_previews_it(scripted, case, why, tmp_path):
    stack = scripted(**case)
    if stack.recorded is None and "recorded" not in case:
        stack.recorded = _current(stack)       # the right fingerprint, but from a failed update
    run = rollout.StackRun(SITE.name, SITE.role)
    rollout.run_stack(SITE, "preview", None, run, skip_unchanged=True, log_dir=tmp_path)
    assert (run.state, stack.previews, run.note) == ("ok", 1, "")
    assert why in (tmp_path / f"{SITE.name}.log").read_text()


def test_the_fleet_stack_always_runs_the_engine(scripted):
    stack = scripted()
    stack.recorded = _current(stack)
    fleet = StackSpec(name="local-fleet", role="fleet", sites=("aws-use1",), config={})
    rollout.run_stack(fleet, "preview", None, rollout.StackRun(fleet.name, fleet.role), skip_unchanged=True)
    assert stack.previews == 1


def test_without_the_flag_the_engine_always_runs(scripted):
    stack = scripted()
    stack.recorded = _current(stack)
    rollout.run_stack(SITE, "preview", None, rollout.StackRun(SITE.name, SITE.role))
    assert stack.previews == 1


def test_a_resolved_plan_with_the_same_decision_leaves_the_plan_file_alone(tmp_path):
    from infra.loader import load_environment
    from policies.placement import solve

    env = load_environment("local")
    path = tmp_path / "plans" / "local.json"
    first = solve(env)
    rollout._write_plan(path, first)
    written = path.read_bytes()
    again = solve(env)
    again.solve_seconds = first.solve_seconds + 1.0          # a re-solve: other timings, same decision
    rollout._write_plan(path, again)
    assert path.read_bytes() == written
    moved = first.model_copy(deep=True)
    moved.sites[0].pipelines = {}                             # another decision replaces it
    rollout._write_plan(path, moved)
    assert path.read_bytes() != written
