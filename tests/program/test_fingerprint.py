"""Inputs fingerprints (hybridml/stack/fingerprint.py) and the preview that skips unchanged stacks with them
(`hybridml preview ENV --engine --skip-unchanged`; the real engine run is in tests/e2e/test_local_stack.py)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from pulumi import automation as auto

from hybridml.ops import rollout, stack_state
from hybridml.ops.shards import StackSpec
from hybridml.stack import fingerprint
from hybridml.stack.config import ConfigEntry, project_config_defaults, project_dir
from hybridml.stack.planfile import write_plan

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
    assert "hybridml/stack/fingerprint.py" in files and "Pulumi.yaml" in files
    assert files[f"hybridml:plan={plan}"] == b"{}"
    assert any(k.startswith("hybridml:spec=") for k in files)                # a shipped name resolves
    assert set(versions) == set(fingerprint.DISTRIBUTIONS) and versions["pulumi"] != "absent"


def test_the_offline_preview_exports_it_as_a_secret():
    from hybridml.ops.preview import resolved_exports, run_preview

    result = run_preview("dev", stack="fingerprint-dev")
    values, secret = resolved_exports(result, (fingerprint.EXPORT,))
    assert len(values[fingerprint.EXPORT]) == 64 and fingerprint.EXPORT in secret


class RecordedStack:
    """An Automation API stack whose last update and config are scripted (no engine)."""

    def __init__(self, result="succeeded"):
        self.result = result
        self.previews = 0

    def info(self):
        return SimpleNamespace(kind="update", result=self.result, end_time="yesterday", start_time="yesterday")

    def get_all_config(self):
        return {"hybridml:spec": auto.ConfigValue("infra/environments/local.yaml"),
                "hybridml:mode": auto.ConfigValue("local")}

    def set_all_config(self, config):
        pass

    def remove_all_config(self, keys):
        pass

    def export_stack(self):
        return SimpleNamespace(deployment={})

    def preview(self, **kw):
        self.previews += 1


SECRET_SIG = "4dabf18193072939515e22adb298388d"
SITE = StackSpec(name="local-aws-use1", role="site", sites=("aws-use1",),
                 config={"hybridml:spec": ConfigEntry("infra/environments/local.yaml"),
                         "hybridml:sites": ConfigEntry('["aws-use1"]')})
FLEET = StackSpec(name="local-fleet", role="fleet", sites=("aws-use1",),
                  config={"hybridml:spec": ConfigEntry("infra/environments/local.yaml"),
                          "hybridml:role": ConfigEntry("fleet")}, after=("local-aws-use1",))
MEMBERS = {"aws-use1": {"site": "aws-use1", "pipelines": 3, "kubeconfig": "apiVersion: v1"}}


def _now(spec, references=None) -> str:
    config = {**project_config_defaults(), **{k: v.value for k, v in spec.config.items()}}
    return fingerprint.inputs_fingerprint(config, project_dir(), references)


def _state(recorded, members=None, pending=False):
    outputs = {"fleet_members": members or MEMBERS}
    if recorded:   # as `pulumi stack export --show-secrets` writes a secret output
        outputs[fingerprint.EXPORT] = {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "plaintext": f'"{recorded}"'}
    return {"resources": [{"type": "pulumi:pulumi:Stack", "outputs": outputs}] + [{"type": "x"}] * 41,
            "pending_operations": [{"type": "creating"}] if pending else []}


@pytest.fixture
def scripted(monkeypatch):
    def make(states, result="succeeded"):
        stack = RecordedStack(result)
        monkeypatch.setattr(auto.Stack, "create_or_select", staticmethod(lambda name, ws: stack))
        monkeypatch.setattr(auto.Stack, "select", staticmethod(lambda name, ws: stack))
        monkeypatch.setattr(rollout, "clear_stale_locks", lambda name, out: 0)
        monkeypatch.setattr(stack_state, "locked", lambda name: False)
        monkeypatch.setattr(rollout, "resource_count", lambda name, ws: 42)
        monkeypatch.setattr(stack_state.StateReader, "state", lambda self, name: states.get(name))
        return stack, stack_state.StateReader(None)
    return make


def test_an_unchanged_stack_is_reported_same_without_the_engine(scripted):
    stack, reader = scripted({SITE.name: _state(_now(SITE))})
    run = rollout.StackRun(SITE.name, SITE.role)
    rollout.run_stack(SITE, "preview", None, run, skip_unchanged=reader)
    assert (run.state, run.changes, stack.previews) == ("ok", {"same": 42}, 0)
    assert "engine not run" in run.note


@pytest.mark.parametrize("case,why", [
    ({"recorded": "0" * 64}, "inputs changed"),
    ({"recorded": None}, "no inputs fingerprint"),
    ({"pending": True}, "pending operations"),
    ({"result": "failed"}, "did not succeed"),
])
def test_otherwise_the_engine_previews_it(scripted, case, why, tmp_path):
    recorded = case.get("recorded", _now(SITE))
    stack, reader = scripted({SITE.name: _state(recorded, pending=case.get("pending", False))},
                             result=case.get("result", "succeeded"))
    run = rollout.StackRun(SITE.name, SITE.role)
    rollout.run_stack(SITE, "preview", None, run, skip_unchanged=reader, log_dir=tmp_path)
    assert (run.state, stack.previews, run.note) == ("ok", 1, "")
    assert why in (tmp_path / f"{SITE.name}.log").read_text()


def test_the_fleet_stack_also_hashes_the_site_outputs_it_reads(scripted):
    # the program sees 3.0 through a stack reference where the state file says 3
    read = {SITE.name: {"aws-use1": {**MEMBERS["aws-use1"], "pipelines": 3.0}}}
    states = {SITE.name: _state(_now(SITE)), FLEET.name: _state(_now(FLEET, read))}
    stack, reader = scripted(states)
    run = rollout.StackRun(FLEET.name, FLEET.role)
    rollout.run_stack(FLEET, "preview", None, run, skip_unchanged=reader)
    assert stack.previews == 0 and "engine not run" in run.note
    # a site stack updated since (new outputs): the fleet stack goes through the engine
    states[SITE.name] = _state(_now(SITE), members={"aws-use1": {**MEMBERS["aws-use1"], "pipelines": 4}})
    stack, reader = scripted(states)
    rollout.run_stack(FLEET, "preview", None, rollout.StackRun(FLEET.name, FLEET.role), skip_unchanged=reader)
    assert stack.previews == 1


def test_without_the_flag_the_engine_always_runs(scripted):
    stack, _ = scripted({SITE.name: _state(_now(SITE))})
    rollout.run_stack(SITE, "preview", None, rollout.StackRun(SITE.name, SITE.role))
    assert stack.previews == 1


def test_a_resolved_plan_with_the_same_decision_leaves_the_plan_file_alone(tmp_path):
    from infra.loader import load_environment
    from policies.placement import solve

    env = load_environment("local")
    path = tmp_path / "plans" / "local.json"
    first = solve(env)
    write_plan(path, first)
    written = path.read_bytes()
    again = solve(env)
    again.solve_seconds = first.solve_seconds + 1.0          # a re-solve: other timings, same decision
    write_plan(path, again)
    assert path.read_bytes() == written
    moved = first.model_copy(deep=True)
    moved.sites[0].pipelines = {}                             # another decision replaces it
    write_plan(path, moved)
    assert path.read_bytes() != written


def test_a_locked_stack_is_never_skipped_and_a_dead_processs_lock_is_cleared(tmp_path, monkeypatch):
    import json
    import socket
    import subprocess

    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{tmp_path}")
    locks = tmp_path / ".pulumi" / "locks" / "organization" / "hybridml" / "local-aws-use1"
    locks.mkdir(parents=True)
    assert not stack_state.locked("local-aws-use1")
    gone = subprocess.Popen(["true"])
    gone.wait()
    (locks / "a.json").write_text(json.dumps({"pid": gone.pid, "hostname": socket.gethostname()}))
    assert stack_state.locked("local-aws-use1") and not stack_state.locked("local-dc-local")
    said = []
    assert stack_state.clear_stale_locks("local-aws-use1", said.append) == 1
    assert not stack_state.locked("local-aws-use1") and "which is gone" in said[0]
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://bucket")          # other backends: nothing to look at
    assert stack_state.lock_dirs("local-aws-use1") == []
