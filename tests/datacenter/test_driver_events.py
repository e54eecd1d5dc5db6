"""The driver's event handling and abort rules, on synthetic ansible-runner events (no Ansible run)."""
from __future__ import annotations

import pytest

from datacenter.driver import CONNECT_TASK, FINAL_TASK, RunTracker, _message, max_fail_exceeded


def ev(kind, host=None, task=None, **data):
    return {"event": kind, "event_data": {"host": host, "task": task, **data}}


def run(tracker, events):
    for e in events:
        assert tracker.handle(e) is True
    return tracker


def finish(host, changed=False):
    return [ev("runner_on_start", host, "Base OS | Install base packages"),
            ev("runner_on_ok", host, "Base OS | Install base packages", res={"changed": changed}),
            ev("runner_on_start", host, FINAL_TASK),
            ev("runner_on_ok", host, FINAL_TASK, res={"changed": False})]


def test_one_failed_host_is_reported_with_task_and_the_rest_finish(local_inventory):
    events = []
    tracker = RunTracker(local_inventory, local_inventory.batches(), local_inventory.host_names,
                         on_event=events.append)
    stream = finish("r1-h01", changed=True) + finish("r1-h03") + [
        ev("runner_on_start", "r1-h02", CONNECT_TASK),
        ev("runner_on_failed", "r1-h02", CONNECT_TASK,
           res={"msg": "timed out waiting for ping module test:\n  ssh: connect to host 10.77.1.12 port 22: "
                       "Connection refused"})]
    for h in ("r2-h01", "r2-h02", "r2-h03"):
        stream += finish(h)
    result = run(tracker, stream).finalise({"processed": {}}, "failed", 2)
    statuses = {h.name: h.status for h in result.hosts.values()}
    assert statuses == {"r1-h01": "changed", "r1-h02": "failed", "r1-h03": "ok", "r2-h01": "ok", "r2-h02": "ok",
                        "r2-h03": "ok"}
    bad = result.failed_hosts[0]
    assert bad.failed_task == CONNECT_TASK
    assert bad.message.startswith("host unreachable over SSH: timed out waiting for ping module test: ssh: connect")
    assert not result.ok and result.aborted_after_batch is None
    assert result.hosts["r1-h01"].changed_tasks == ["Base OS | Install base packages"]
    kinds = [(e.kind, e.host, e.status) for e in events if e.kind in ("batch_start", "host_done")]
    assert kinds[0] == ("batch_start", None, None)
    assert ("host_done", "r1-h02", "failed") in kinds
    assert [e.batch for e in events if e.kind == "batch_start"] == [0, 1]


def test_hosts_after_an_aborted_batch_are_not_run_and_the_rest_of_the_batch_is_aborted(local_inventory):
    tracker = RunTracker(local_inventory, local_inventory.batches(), local_inventory.host_names)
    stream = []
    for h in ("r1-h01", "r1-h02"):
        stream += [ev("runner_on_start", h, CONNECT_TASK), ev("runner_on_failed", h, CONNECT_TASK, res={"msg": "x"})]
    stream += [ev("runner_on_start", "r1-h03", CONNECT_TASK), ev("runner_on_ok", "r1-h03", CONNECT_TASK, res={})]
    result = run(tracker, stream).finalise({}, "failed", 2)
    assert [h.status for h in result.hosts.values()] == ["failed", "failed", "aborted", "not_run", "not_run",
                                                         "not_run"]
    assert "max_fail_percentage" in result.hosts["r1-h03"].message
    assert "batch 1 (rack r1) stopped the rollout" in result.hosts["r2-h01"].message
    assert result.aborted_after_batch == 0


def test_ignored_errors_and_skips_do_not_fail_a_host(local_inventory):
    tracker = RunTracker(local_inventory, [["r1-h01"]], ["r1-h01"])
    stream = [ev("runner_on_failed", "r1-h01", "t", ignore_errors=True, res={"msg": "meh"}),
              ev("runner_on_skipped", "r1-h01", "t2")] + finish("r1-h01")
    result = run(tracker, stream).finalise({}, "successful", 0)
    h = result.hosts["r1-h01"]
    assert (h.status, h.skipped, h.failed) == ("ok", 1, 0)
    assert result.ok


def test_unreachable_events_fail_the_host(local_inventory):
    tracker = RunTracker(local_inventory, [["r1-h01"]], ["r1-h01"])
    result = run(tracker, [ev("runner_on_unreachable", "r1-h01", "Bootstrap | Gather facts",
                              res={"msg": "Failed to connect"})]).finalise({}, "failed", 4)
    assert result.hosts["r1-h01"].status == "failed"
    assert result.hosts["r1-h01"].message == "unreachable: Failed to connect"


def test_events_of_other_hosts_and_tasks_are_ignored(local_inventory):
    tracker = RunTracker(local_inventory, [["r1-h01"]], ["r1-h01"])
    assert tracker.handle(ev("runner_on_ok", "not-ours", "t", res={"changed": True}))
    assert tracker.handle({"event": "verbose", "stdout": "x"})
    assert tracker.result.hosts["r1-h01"].ok == 0


@pytest.mark.parametrize("failed,size,pct,exceeded", [
    (1, 3, 34, False),  # 33 % is not above 34 %: the rollout goes on (local spec)
    (2, 3, 34, True),
    (1, 3, 33, True),   # 33.3 % is above 33 %
    (0, 3, 0, False),
    (1, 10, 0, True),   # 0 %: any failure stops later batches
    (3, 3, 100, False),  # never above 100 % (Ansible still stops when a whole batch failed)
])
def test_max_fail_rule_is_ansibles(failed, size, pct, exceeded):
    assert max_fail_exceeded(failed, size, pct) is exceeded


def test_messages_are_one_line_and_bounded():
    assert _message({"msg": "a\n  b"}) == "a b"
    assert _message({"results": [{"failed": False}, {"failed": True, "stderr": "boom"}]}) == "boom"
    assert _message({"censored": "hidden (no_log)"}) == "hidden (no_log)"
    assert len(_message({"msg": "x" * 5000})) < 700
