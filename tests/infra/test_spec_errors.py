"""Bad input: every problem named with file, line, field path and reason (exit 2 at the CLI)."""
from __future__ import annotations

import copy

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from infra.errors import SpecError
from infra.loader import parse_environment
from tests.conftest import SMALL_SPEC, dump


def mutate(fn):
    spec = copy.deepcopy(SMALL_SPEC)
    fn(spec)
    return spec


def _set(path, value):
    def fn(spec):
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return fn


def _append(path, value):
    def fn(spec):
        node = spec
        for key in path:
            node = node[key]
        node.append(copy.deepcopy(value))
    return fn


def _del(path):
    def fn(spec):
        node = spec
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return fn


CASES = [
    ("unknown top-level key", _set(["pipelnes"], []), "pipelnes", "unknown field 'pipelnes' (did you mean 'pipelines'?)"),
    ("typo in nested field", _set(["pipelines", 0, "capacity_rp"], 3), "pipelines[0].capacity_rp", "did you mean 'capacity_rps'"),
    ("missing required", _del(["pipelines", 1, "latency"]), "pipelines[1].latency", "required field 'latency' is missing"),
    ("bad enum", _set(["pipelines", 1, "privacy_tier"], "secret"), "pipelines[1].privacy_tier", "'public', 'internal', 'pii' or 'restricted'"),
    ("service above p99", _set(["pipelines", 1, "latency"], {"p99_ms": 50, "service_ms": 60}), "pipelines[1].latency", "must be below p99_ms"),
    ("bad engine kind", _set(["pipelines", 0, "engine"], {"kind": "tgi"}), "pipelines[0].engine", "tgi"),
    ("bad engine field", _set(["pipelines", 0, "engine", "tensor_paralel"], 2), "pipelines[0].engine.tensor_paralel", "did you mean 'tensor_parallel'"),
    ("unknown site in rtt", _set(["network", "user_rtt_ms", "us-east", "aws-use9"], 3), "network.user_rtt_ms.us-east.aws-use9", "unknown site 'aws-use9'"),
    ("missing rtt", _del(["network", "user_rtt_ms", "eu-west", "dc-ash"]), "network.user_rtt_ms.eu-west", "missing RTT from user region 'eu-west' to site 'dc-ash'"),
    ("missing site pair", _del(["network", "site_rtt_ms", "dc-ash"]), "network.site_rtt_ms", "missing RTT between sites 'dc-ash' and 'dc-ams'"),
    ("gpu offered nowhere", _set(["pipelines", 0, "resources", "gpu", "type"], "B200"), "pipelines[0].resources.gpu.type", "GPU type 'B200' is offered by no site"),
    ("duplicate pipeline", _append(["pipelines"], SMALL_SPEC["pipelines"][1]), "pipelines[2].name", "duplicate pipeline name 'recs'"),
    ("variant weights", _set(["pipelines", 0, "variants"], [{"name": "a", "model": "m", "weight": 60}, {"name": "b", "model": "m", "weight": 30}]),
     "pipelines[0].variants", "sum to 90, not 100"),
    ("unknown demand region", _set(["pipelines", 1, "demand_rps", "us-eats"], 5), "pipelines[1].demand_rps.us-eats", "did you mean 'us-east'"),
    ("unknown feature view", _set(["pipelines", 1, "dependencies"], [{"feature_view": "user-profil"}]), "pipelines[1].dependencies[0].feature_view", "unknown feature view"),
    ("tp mismatch", _set(["pipelines", 0, "engine", "tensor_parallel"], 4), "pipelines[0].resources.gpu.count", "must equal tensor_parallel"),
    ("shadow unknown", _set(["pipelines", 1, "shadow"], {"target": "nope"}), "pipelines[1].shadow.target", "unknown pipeline 'nope'"),
    ("budget on non-llm", _set(["tenants", 0, "budgets"], [{"pipeline": "recs", "tokens_per_minute": 5}]), "tenants[0].budgets[0].pipeline", "LLM"),
    ("unpinned image", _set(["pipelines", 1, "engine", "image"], "ghcr.io/x/recs"), "pipelines[1].engine.image", "no tag or digest"),
    ("latest image", _set(["pipelines", 1, "engine", "image"], "ghcr.io/x/recs:latest"), "pipelines[1].engine.image", "latest"),
    ("duplicate host name", _set(["sites", 2, "racks", 0, "host_pools", 0, "name_prefix"], "ash-r1-h"), "sites[2].racks[0].host_pools[0].name_prefix", "duplicate host name 'ash-r1-h01'"),
    ("address clash", _set(["sites", 2, "racks", 0, "host_pools", 0, "first_address"], "10.1.1.11"), "sites[2].racks[0].host_pools[0].first_address", "clash with host pool 'ash-r1-h'"),
    ("bad ip", _set(["sites", 1, "racks", 0, "host_pools", 0, "first_address"], "10.1.1"), "sites[1].racks[0].host_pools[0].first_address", "IPv4"),
    ("empty rack", _set(["sites", 1, "racks", 0, "host_pools"], []), "sites[1].racks[0]", "at least one entry"),
    ("bad zone", _set(["sites", 0, "zones"], ["eu-west-1a"]), "sites[0].zones[0]", "not in region"),
    ("bad name", _set(["pipelines", 0, "name"], "Chat_Bot"), "pipelines[0].name", "pattern"),
]


@pytest.mark.parametrize("label,change,path,message", CASES, ids=[c[0] for c in CASES])
def test_bad_spec_names_field_and_reason(label, change, path, message):
    text = dump(mutate(change))
    with pytest.raises(SpecError) as info:
        parse_environment(text, "envs/bad.yaml")
    err = info.value
    rendered = [i.render(err.file) for i in err.issues]
    match = [r for r in rendered if f": {path}: " in r and message in r]
    assert match, f"expected {path!r} / {message!r} in:\n" + "\n".join(rendered)
    assert all(r.startswith("envs/bad.yaml:") for r in rendered)


def test_line_numbers_point_at_the_offending_key():
    text = dump(mutate(_set(["pipelines", 1, "capacity_rp"], 5)))
    with pytest.raises(SpecError) as info:
        parse_environment(text, "bad.yaml")
    issue = next(i for i in info.value.issues if i.path[-1] == "capacity_rp")
    assert text.splitlines()[issue.line - 1].strip().startswith("capacity_rp:")


def test_every_problem_is_reported_at_once():
    def several(spec):
        spec["pipelines"][0]["resources"]["gpu"]["type"] = "B200"
        spec["pipelines"][1]["demand_rps"]["mars"] = 1
        del spec["network"]["user_rtt_ms"]["eu-west"]["dc-ash"]
    with pytest.raises(SpecError) as info:
        parse_environment(dump(mutate(several)), "bad.yaml")
    assert len(info.value.issues) == 3


def test_yaml_syntax_error_has_line():
    with pytest.raises(SpecError) as info:
        parse_environment("name: x\nsites: [\n  - a\n", "broken.yaml")
    assert info.value.issues[0].line is not None
    assert "not valid YAML" in info.value.issues[0].message


def test_cli_validate_bad_spec_exits_2_with_location(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(dump(mutate(_set(["pipelines", 0, "capacity_rp"], 3))))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}:" in result.output and "pipelines[0].capacity_rp" in result.output
    assert "did you mean 'capacity_rps'" in result.output


def test_cli_missing_file_exits_2():
    result = CliRunner().invoke(app, ["validate", "no/such/env.yaml"])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_cli_plan_bad_spec_deploys_nothing_and_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(dump(mutate(_set(["pipelines", 0, "resources", "gpu", "type"], "B200"))))
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["plan", str(path), "--json", str(out)])
    assert result.exit_code == 2
    assert not out.exists()
