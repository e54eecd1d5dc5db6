"""`rollout.run_stack`: runs a stack again after a transient API-server error (and only then), and
recovers an interrupted update by taking over its objects. The Automation API's Stack is replaced by
a scripted one (no engine); the real kill-and-resume runs in tests/e2e/test_local_stack.py."""
from __future__ import annotations

import pytest
from pulumi import automation as auto

from hybridml.ops import rollout
from hybridml.ops.shards import StackSpec


class ScriptedStack:
    """Fails `up` with the scripted errors in order, then succeeds."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        self.ups = 0
        self.name = "prod-dc-ashburn"

    def get_all_config(self):
        return {}

    def set_all_config(self, config):
        pass

    def export_stack(self):
        class Deployment:
            deployment = {}
        return Deployment()

    def up(self, **kw):
        self.ups += 1
        if self.errors:
            raise auto.errors.CommandError(auto.CommandResult(stdout="", stderr=self.errors.pop(0), code=255))


class FakeWorkspace:
    def list_stacks(self):
        return []


@pytest.fixture
def scripted(monkeypatch):
    def make(errors, stale_locks=0):
        stack = ScriptedStack(errors)
        stack.adopted = 0
        monkeypatch.setattr(auto.Stack, "create_or_select", staticmethod(lambda name, ws: stack))
        monkeypatch.setattr(rollout, "clear_stale_locks", lambda name, out: stale_locks)

        def adopting(st, ws, out):
            st.adopted += 1
            return st
        monkeypatch.setattr(rollout, "_adopting", adopting)
        return stack
    return make


SPEC = StackSpec(name="prod-dc-ashburn", role="site", sites=("dc-ashburn",), config={})


def test_a_transient_error_runs_the_stack_again(scripted, tmp_path):
    stack = scripted(["error: resource quota evaluation timed out"])
    run = rollout.StackRun(SPEC.name, SPEC.role)
    rollout.run_stack(SPEC, "up", FakeWorkspace(), run, retries=1, log_dir=tmp_path)
    assert (run.state, run.retries, stack.ups) == ("ok", 1, 2)
    assert "transient error, running it again (1/1)" in (tmp_path / f"{SPEC.name}.log").read_text()


def test_retries_are_bounded(scripted):
    stack = scripted(["etcdserver: request timed out"] * 3)
    run = rollout.StackRun(SPEC.name, SPEC.role)
    rollout.run_stack(SPEC, "up", FakeWorkspace(), run, retries=2)
    assert (run.state, run.retries, stack.ups) == ("failed", 2, 3)
    assert "etcdserver: request timed out" in run.error


def test_other_errors_fail_at_once(scripted):
    stack = scripted(["dial tcp 127.0.0.1:1: connect: connection refused"])
    run = rollout.StackRun(SPEC.name, SPEC.role)
    rollout.run_stack(SPEC, "up", FakeWorkspace(), run, retries=1)
    assert (run.state, run.retries, stack.ups) == ("failed", 0, 1)
    assert "connection refused" in run.error


def test_an_interrupted_update_is_recovered_by_taking_over_its_objects(scripted):
    stack = scripted([], stale_locks=1)
    run = rollout.StackRun(SPEC.name, SPEC.role)
    rollout.run_stack(SPEC, "up", FakeWorkspace(), run)
    assert (run.state, stack.adopted, stack.ups) == ("ok", 1, 1)


def test_an_orderly_update_applies_without_force(scripted):
    stack = scripted([])
    run = rollout.StackRun(SPEC.name, SPEC.role)
    rollout.run_stack(SPEC, "up", FakeWorkspace(), run)
    assert (run.state, stack.adopted) == ("ok", 0)
