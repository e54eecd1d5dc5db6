"""The `batch:` section (infra/batch.py): what a valid batch pipeline reads as, and every bad input named with file,
line, field path and reason (exit 2 at the CLI)."""
from __future__ import annotations

import copy

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from infra.batch import cron_gap_minutes
from infra.errors import SpecError
from infra.loader import parse_environment
from tests.conftest import SMALL_SPEC, dump

LLM_JOB = {"name": "captions", "engine": {"kind": "vllm", "tensor_parallel": 1}, "model": "Qwen/Qwen2.5-1.5B-Instruct",
           "input": "s3://b/in/", "output": "s3://b/out/", "size": {"items": 100_000, "tokens_per_item": 500},
           "throughput_per_worker": {"tokens_per_s": 2000}, "deadline_hours": 4,
           "resources": {"cpu": 3, "memory_gib": 12, "gpu": {"type": "L4", "count": 1}}}
CPU_JOB = {"name": "embed", "engine": {"kind": "cpu", "image": "ghcr.io/x/embed:1.0.0"}, "model": "m",
           "input": "gs://b/docs/", "output": "gs://b/emb/", "size": {"items": 1_000_000},
           "throughput_per_worker": {"items_per_s": 100}, "schedule": "0 2 * * *", "privacy_tier": "pii",
           "allowed_jurisdictions": ["US"], "resources": {"cpu": 4, "memory_gib": 8}}


def spec_with(*jobs: dict, spot: dict | None = None) -> dict:
    spec = copy.deepcopy(SMALL_SPEC)
    spec["batch"] = {"pipelines": [copy.deepcopy(j) for j in jobs]}
    if spot is not None:
        spec["batch"]["spot_hourly_usd"] = spot
    return spec


def test_a_valid_batch_section_and_what_it_derives():
    env = parse_environment(dump(spec_with(LLM_JOB, CPU_JOB)), "batch.yaml")
    llm, cpu = env.batch.pipelines
    assert llm.items_per_worker_second == pytest.approx(4.0)          # 2000 tokens/s / 500 tokens per item
    assert llm.window_hours == 4 and llm.needed_items_per_s == pytest.approx(100_000 / 14_400)
    assert llm.min_workers_for_deadline == 2                           # 6.94 items/s at 4 per worker
    assert cpu.window_hours == 24 and cpu.deadline_hours is None       # a daily schedule: a day per run
    assert cpu.worker_hours == pytest.approx(1_000_000 / 100 / 3600)
    assert cpu.privacy_tier == "pii"
    # a spec without the section has none
    assert parse_environment(dump(SMALL_SPEC), "tiny.yaml").batch.pipelines == []


@pytest.mark.parametrize("expression,minutes", [
    ("@daily", 1440), ("0 2 * * *", 1440), ("*/15 * * * *", 15), ("0 */6 * * *", 360), ("0 3 * * 1-5", 1440),
    ("0 0 1,15 * *", 14 * 1440), ("30 4 * * sun", 7 * 1440), ("0 0 29 2 *", 1461 * 1440), ("0 0 1 jan *", 365 * 1440),
])
def test_cron_gap_is_the_shortest_time_between_two_runs(expression, minutes):
    assert cron_gap_minutes(expression) == minutes


@pytest.mark.parametrize("expression,why", [
    ("0 2 * *", "5 fields"), ("61 * * * *", "outside 0-59"), ("0 0 30 2 *", "never runs"), ("*/0 * * * *", "step"),
    ("0 0 * foo *", "not a number or a name"),
])
def test_bad_cron_expressions_are_refused(expression, why):
    with pytest.raises(ValueError, match=why):
        cron_gap_minutes(expression)


def _job(base: dict, **changes) -> dict:
    job = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = job
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node[k]
        if value is None:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return job


CASES = [
    ("typo", _job(LLM_JOB, deadline_hour=3), "batch.pipelines[0].deadline_hour", "did you mean 'deadline_hours'"),
    ("no deadline nor schedule", _job(LLM_JOB, deadline_hours=None), "batch.pipelines[0]",
     "set deadline_hours (a one-off job) or schedule"),
    ("bad cron", _job(CPU_JOB, schedule="0 25 * * *"), "batch.pipelines[0].schedule", "hour: '25' is outside 0-23"),
    ("deadline longer than the schedule's gap", _job(CPU_JOB, schedule="0 */6 * * *", deadline_hours=8),
     "batch.pipelines[0]", "longer than the 6 h between two runs"),
    ("tokens without tokens per item", _job(LLM_JOB, size={"items": 10}), "batch.pipelines[0]",
     "tokens_per_s needs size.tokens_per_item"),
    ("two throughputs", _job(LLM_JOB, throughput_per_worker={"items_per_s": 1, "tokens_per_s": 2}),
     "batch.pipelines[0].throughput_per_worker", "exactly one of items_per_s or tokens_per_s"),
    ("not a dataset URI", _job(LLM_JOB, input="/data/in"), "batch.pipelines[0].input", "String should match pattern"),
    ("same input and output", _job(LLM_JOB, output="s3://b/in/"), "batch.pipelines[0]", "overwrite what it reads"),
    ("vllm without a GPU", _job(LLM_JOB, resources={"cpu": 3, "memory_gib": 12}), "batch.pipelines[0].resources.gpu",
     "needs a GPU per worker"),
    ("GPUs not the tensor parallel", _job(LLM_JOB, engine__tensor_parallel=2), "batch.pipelines[0].resources.gpu.count",
     "must equal the engine's tensor_parallel (2)"),
    ("GPU type offered nowhere", _job(LLM_JOB, resources__gpu__type="B200"), "batch.pipelines[0].resources.gpu.type",
     "GPU type 'B200' is offered by no site"),
    ("worker wider than any node", _job(LLM_JOB, engine__tensor_parallel=2, resources__gpu__count=2),
     "batch.pipelines[0].resources.gpu.count", "fit no node: the largest has 1"),
    ("cpu engine with GPUs", _job(CPU_JOB, resources={"cpu": 4, "memory_gib": 8, "gpu": {"type": "L4", "count": 1}}),
     "batch.pipelines[0].resources.gpu", "must not request GPUs"),
    ("untagged image", _job(CPU_JOB, engine__image="ghcr.io/x/embed"), "batch.pipelines[0].engine.image", "no tag or digest"),
    ("pii without jurisdictions", _job(CPU_JOB, allowed_jurisdictions=None), "batch.pipelines[0].allowed_jurisdictions",
     "pii data must say where it may be processed"),
    ("unknown jurisdiction", _job(CPU_JOB, allowed_jurisdictions=["UK"]), "batch.pipelines[0].allowed_jurisdictions[0]",
     "unknown jurisdiction 'UK'"),
    ("min above max workers", _job(LLM_JOB, min_workers=5, max_workers=2), "batch.pipelines[0]",
     "min_workers (5) exceeds max_workers (2)"),
    ("name of an online pipeline", _job(LLM_JOB, name="recs"), "batch.pipelines[0].name", "also an online pipeline's name"),
]


@pytest.mark.parametrize("label,job,path,message", CASES, ids=[c[0] for c in CASES])
def test_bad_batch_input_names_line_path_and_reason(label, job, path, message):
    text = dump(spec_with(job))
    with pytest.raises(SpecError) as err:
        parse_environment(text, "batch.yaml")
    issues = err.value.issues
    hit = [i for i in issues if i.dotted_path == path and message in i.message]
    assert hit, f"{label}: wanted {path}: {message}; got {[i.render('batch.yaml') for i in issues]}"
    assert hit[0].line is not None and hit[0].line > 1
    # the line points into the batch section
    assert "batch:" in "\n".join(text.splitlines()[: hit[0].line])


def test_duplicate_batch_names_and_bad_spot_prices():
    spot = {"aws-use1": {"g6.xlarge": 0.3, "x9.large": 0.1}, "dc-ash": {"g6.xlarge": 0.3}, "aws-euw9": {}}
    with pytest.raises(SpecError) as err:
        parse_environment(dump(spec_with(LLM_JOB, LLM_JOB, spot=spot)), "batch.yaml")
    found = {(i.dotted_path, i.message) for i in err.value.issues}
    assert any(p == "batch.pipelines[1].name" and "duplicate batch pipeline name 'captions'" in m for p, m in found)
    assert any(p == "batch.spot_hourly_usd.aws-use1.g6.xlarge" and "does not list 'spot' in capacity_types" in m for p, m in found)
    assert any(p == "batch.spot_hourly_usd.aws-use1.x9.large" and "offers no instance type" in m for p, m in found)
    assert any(p == "batch.spot_hourly_usd.dc-ash" and "is a datacenter" in m for p, m in found)
    assert any(p == "batch.spot_hourly_usd.aws-euw9" and "not a cloud site" in m for p, m in found)


def test_cli_validate_exits_2_with_file_line_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(dump(spec_with(_job(CPU_JOB, schedule="0 */6 * * *", deadline_hours=8))))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert f"{path}:" in result.output and "batch.pipelines[0]: deadline_hours 8 is longer" in result.output
