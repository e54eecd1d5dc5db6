"""The end-to-end check of `hybridml status`, run by tests/e2e/test_local_stack.py once the local stack is
deployed (its module fixture owns the clusters, so the stack is brought up once for all e2e tests)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from infra.loader import load_environment
from policies.placement import solve
from tests.conftest import REPO


def _status(*args: str) -> tuple[int, dict | None, str]:
    proc = subprocess.run([sys.executable, "-m", "hybridml.cli", "status", "local", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    try:
        data = json.loads(proc.stdout) if "--json" in args else None
    except ValueError:
        data = None
    return proc.returncode, data, proc.stdout + proc.stderr


def check_fleet_status(kubeconfig: Path, tmp: Path) -> float:
    """Assert the deployed local stack is healthy per `hybridml status`; return its wall time."""
    env = load_environment("local")
    plan = solve(env)       # what the stack's program solved (deterministic)
    plan_file = tmp / "local-plan.json"
    plan_file.write_text(plan.model_dump_json())
    t0 = time.monotonic()
    rc, data, out = _status("--json", "--plan", str(plan_file), "--kubeconfig", str(kubeconfig))
    seconds = time.monotonic() - t0
    assert rc == 0 and data is not None, out[-4000:]
    assert data["ok"] and data["simulated"], out[-4000:]
    assert all(s["reachable"] and s["simulated"] for s in data["sites"]), data["sites"]
    rows = {p["name"]: p for p in data["pipelines"]}
    assert set(rows) == {p.name for p in plan.pipelines}
    for pp in plan.pipelines:
        row = rows[pp.name]
        assert row["ok"] and row["headroom_ms"] >= 0, row
        if pp.engine == "triton":   # "declared" until the real KServe controller's predictor pods are up
            assert row["state"] in ("ok", "declared"), row
        else:
            assert row["state"] == "ok" and row["ready"] == row["desired"] == pp.total_replicas, row
            for site, n in pp.replicas.items():
                assert row["sites"][site]["ready"] == n, row
    assert not [f for f in data["findings"] if f["severity"] != "info"], data["findings"]
    used = [s for s in data["sites"] if s["gpus_planned"]]
    assert used and all(sum(s["gpus_used"].values()) <= sum(s["gpus_capacity"].values()) for s in used)

    # a cluster that cannot be reached is a finding and exit 1, not a crash
    rc, data, out = _status("--json", "--plan", str(plan_file), "--kubeconfig", str(kubeconfig),
                            "--context", "aws-use1=no-such-context")
    assert rc == 1 and data is not None and not data["ok"], out[-4000:]
    assert [f["kind"] for f in data["findings"] if f["severity"] == "error"] == ["unreachable"], data["findings"]
    return seconds
