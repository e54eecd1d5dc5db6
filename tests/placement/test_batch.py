"""The batch stage (policies/placement/batch.py): batch pipelines on what the online plan leaves, datacenter headroom
first, then new cloud nodes (spot where allowed and priced), privacy and jurisdiction as for online work, deadlines
met (or named when they cannot be), `--explain`, and plans that still load without a batch section."""
from __future__ import annotations

import copy
import json
import math
import time

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from infra.errors import PlacementInfeasible
from infra.loader import load_environment, parse_environment
from policies.placement import solve
from policies.placement import solver as online
from policies.placement.batch import headroom_bins, rooms_after
from policies.placement.packing import Pods
from policies.placement.plan import PlacementPlan
from policies.placement.shapes import site_packing
from tests.conftest import SMALL_SPEC, dump
from tests.infra.test_batch_spec import CPU_JOB, LLM_JOB


def env_with(*jobs: dict, spot: dict | None = None, spot_types: tuple[str, ...] = ()):
    spec = copy.deepcopy(SMALL_SPEC)
    for it in spec["sites"][0]["instance_types"]:
        if it["name"] in spot_types:
            it["capacity_types"] = ["on-demand", "spot"]
    spec["batch"] = {"pipelines": [copy.deepcopy(j) for j in jobs]}
    if spot:
        spec["batch"]["spot_hourly_usd"] = spot
    return parse_environment(dump(spec), "batch.yaml")


def check_deadlines(env, plan) -> None:
    """Every batch pipeline finishes its items within its window at the planned workers, within its worker bounds."""
    for bp in plan.batch.pipelines:
        b = env.batch.pipeline(bp.name)
        assert b.min_workers <= bp.workers <= b.max_workers
        assert bp.workers * b.items_per_worker_second * b.window_hours * 3600 >= b.size.items - 1e-6
        assert bp.finish_hours <= b.window_hours + 1e-6
        assert sum(s.items for s in bp.sites) == b.size.items
        for s in bp.sites:
            assert s.hours <= b.window_hours + 1e-6
            assert s.worker_hours <= s.workers * b.window_hours + 1e-6


def test_local_plan_places_datacenter_headroom_first_then_cloud():
    env = load_environment("local")
    plan = solve(env)
    check_deadlines(env, plan)
    captions, profiles = plan.batch.pipeline("catalog-captions"), plan.batch.pipeline("profile-embeddings")
    # the pii CPU job: the datacenter's pii racks (no cloud site may hold pii)
    assert [s.site for s in profiles.sites] == ["dc-local"] and profiles.sites[0].worker_groups == {"own": 3}
    assert profiles.explanation.rejected["aws-use1"].startswith("privacy")
    # the L4 job: the datacenter has no GPUs, so new on-demand g6.xlarge nodes (max_nodes 4, 1 used online)
    assert [s.site for s in captions.sites] == ["aws-use1"] and captions.sites[0].worker_groups == {"on-demand": 2}
    assert "no L4 GPUs" in captions.explanation.rejected["dc-local"]
    nodes = {(n.instance_type, n.capacity_type): n.nodes for n in plan.batch.nodes}
    assert nodes[("g6.xlarge", "on-demand")] == 2 and plan.site("aws-use1").nodes["g6.xlarge"] + 2 <= 4
    # the online plan is what solver.solve gives: the batch stage only adds
    plain = online.solve(env)
    assert plan.model_dump(exclude={"batch", "solve_seconds"}) == plain.model_dump(exclude={"batch", "solve_seconds"})


def test_internal_cpu_work_prefers_datacenter_headroom_to_cloud_nodes():
    job = {**CPU_JOB, "privacy_tier": "internal", "allowed_jurisdictions": None}
    del job["allowed_jurisdictions"]
    env = env_with(job)
    plan = solve(env)
    check_deadlines(env, plan)
    bp = plan.batch.pipeline("embed")
    assert len(bp.sites) == 1 and env.site(bp.sites[0].site).kind == "datacenter", bp.explanation
    assert bp.explanation.rejected["aws-use1"].startswith("cost:")
    assert plan.batch.nodes == []


def test_jurisdiction_keeps_data_in_place():
    job = {**CPU_JOB, "allowed_jurisdictions": ["EU"]}
    env = env_with(job)
    plan = solve(env)
    bp = plan.batch.pipeline("embed")
    assert [s.site for s in bp.sites] == ["dc-ams"]
    assert "jurisdiction" in bp.explanation.rejected["dc-ash"]


def test_spot_is_used_where_allowed_and_priced():
    spot = {"aws-use1": {"g6.xlarge": 0.3}}
    env = env_with({**LLM_JOB, "spot": True}, spot=spot, spot_types=("g6.xlarge",))
    plan = solve(env)
    check_deadlines(env, plan)
    bp = plan.batch.pipeline("captions")
    assert bp.sites[0].worker_groups == {"spot": bp.workers}
    assert {(n.instance_type, n.capacity_type) for n in plan.batch.nodes} >= {("g6.xlarge", "spot")}
    # heads stay on on-demand nodes; without the pipeline's allowance spot is not used
    assert "on-demand" in bp.sites[0].head
    plan2 = solve(env_with(LLM_JOB, spot=spot, spot_types=("g6.xlarge",)))
    assert plan2.batch.pipeline("captions").sites[0].worker_groups == {"on-demand": 2}
    assert plan2.batch.pipeline("captions").cost_usd_per_run > bp.cost_usd_per_run


def test_an_infeasible_deadline_is_named_with_needed_and_reachable_throughput(tmp_path):
    # 100,000 items in 1 h need 7 workers of 4 items/s; the g6.xlarge quota (G 64 vCPUs) holds 16, max_workers 3
    job = {**LLM_JOB, "deadline_hours": 1, "max_workers": 3}
    with pytest.raises(PlacementInfeasible) as err:
        solve(env_with(job))
    reason = err.value.reasons[0]
    assert reason.pipeline == "captions" and reason.constraint == "deadline"
    assert "needs 27.78 items/s" in reason.detail and "at most 12.00 items/s reachable" in reason.detail
    assert "max_workers 3" in reason.detail
    # capacity-bound: a pii job on the two pii hosts of dc-ash (2 x 28.8 cores: 14 workers of 4 cores)
    heavy = {**CPU_JOB, "size": {"items": 10**9}, "schedule": None, "deadline_hours": 1, "max_workers": 1000}
    with pytest.raises(PlacementInfeasible) as err:
        solve(env_with(heavy))
    assert "limited by the capacity left after the online peak" in err.value.reasons[0].detail
    path = tmp_path / "late.yaml"
    path.write_text(dump({**copy.deepcopy(SMALL_SPEC), "batch": {"pipelines": [job]}}))
    result = CliRunner().invoke(app, ["plan", str(path), "--no-baseline"])
    assert result.exit_code == 1, result.output
    assert "captions" in result.output and "[deadline] needs 27.78 items/s" in result.output


def test_no_site_may_hold_the_data():
    job = {**CPU_JOB, "allowed_jurisdictions": ["US"], "privacy_tier": "restricted"}
    with pytest.raises(PlacementInfeasible) as err:
        solve(env_with(job))
    assert err.value.reasons[0].constraint == "eligibility"


def test_batch_pods_fit_the_rooms_the_online_pods_leave():
    """Every datacenter headroom bin is a room that first-fit decreasing of the online pods really leaves, and the
    batch workers placed there fit those rooms pod by pod."""
    env = load_environment("local")
    plan = solve(env)
    bins = headroom_bins(env, plan)
    assert bins and all(k.hosts and k.room.cores > 0 for k in bins)
    site = env.site("dc-local")
    pack = site_packing(env, site)
    total_hosts = sum(s.hosts or 0 for s in pack.shapes)
    assert sum(k.hosts or 0 for k in bins if k.site == "dc-local") <= total_hosts
    # the three pii workers of profile-embeddings (4 cores, 8 GiB) and its head fit the pii bins' rooms
    b = env.batch.pipeline("profile-embeddings")
    pii = [k for k in bins if k.zone is not None and k.zone.value == "pii"]
    room = sum(min(math.floor(k.room.cores / b.resources.cpu), math.floor(k.room.memory_gib / b.resources.memory_gib))
               * (k.hosts or 0) for k in pii)
    assert room >= plan.batch.pipeline(b.name).workers
    shape = next(s for s in pack.shapes if s.zone is not None and s.zone.value == "pii")
    left = rooms_after(shape, 2, [Pods("x", shape.allocatable, 1)])
    assert left[0].tolist() == [0.0, 0.0, 0.0] and left[1][1] == pytest.approx(shape.allocatable.cores)


def test_explain_says_where_and_why(tmp_path):
    result = CliRunner().invoke(app, ["plan", "local", "--explain", "catalog-captions", "--no-baseline"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "catalog-captions (batch, vllm, internal, one-off)" in out
    assert "+ aws-use1: 2 worker(s)" in out and "- dc-local: no L4 GPUs" in out
    assert "deadline: 40,000 items in 3 h need 3.70 items/s" in out
    result = CliRunner().invoke(app, ["plan", "local", "--no-baseline", "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 0 and "batch pipelines" in result.output
    data = json.loads((tmp_path / "p.json").read_text())
    assert {b["name"] for b in data["batch"]["pipelines"]} == {"catalog-captions", "profile-embeddings"}


def test_plans_without_batch_still_load_and_keep_their_digest():
    env = load_environment("local")
    plain = online.solve(env)
    data = json.loads(plain.model_dump_json())
    data.pop("batch")
    old = PlacementPlan.model_validate(data)          # a plan file written before the batch stage
    assert old.batch is None and old.digest() == plain.digest()
    withbatch = solve(env)
    assert withbatch.digest() != plain.digest()
    again = solve(env)                                # the same spec gives the same decision
    assert again.digest() == withbatch.digest()
    assert "dc-local" in withbatch.used_sites() and "aws-use1" in withbatch.used_sites()


@pytest.mark.slow
def test_prod_batch_stage_is_fast_and_meets_every_deadline():
    env = load_environment("prod")
    t0 = time.perf_counter()
    plan = solve(env)
    elapsed = time.perf_counter() - t0
    check_deadlines(env, plan)
    assert plan.batch.solve_seconds < 5, plan.batch.solve_seconds
    by = {b.name: b for b in plan.batch.pipelines}
    assert [s.site for s in by["profile-scoring"].sites][0].startswith("dc-")        # pii: own datacenters
    assert all(env.site(s.site).jurisdiction == "EU" for s in by["eu-doc-summaries"].sites)
    assert all(s.kind == "datacenter" for s in by["nightly-embeddings"].sites)     # CPU: headroom, no cloud nodes
    print(f"prod solve {elapsed:.2f} s, batch stage {plan.batch.solve_seconds:.3f} s")


def test_min_workers_beyond_the_capacity_left_is_named_not_a_solver_error():
    """Found by the spec fuzzer: with the cloud quota spent by the online plan, min_workers could not be met and
    HiGHS reported the model infeasible; now the shortfall is a named reason."""
    job = copy.deepcopy(LLM_JOB)
    job["min_workers"] = job["max_workers"] = 64
    job.pop("deadline_hours", None)
    job["deadline_hours"] = 8_000
    with pytest.raises(PlacementInfeasible) as err:
        solve(env_with(job))
    text = str(err.value)
    assert "min_workers is 64" in text and "fit" in text
