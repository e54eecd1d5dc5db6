"""Real Feast (.venv-feast, scripts/feast_venv.sh) on real Redis (Debian's redis-server), on loopback.

One rig for the module (tools/feast_rig.py): a Redis primary and replica and three Sentinels, started with the
cluster's own configuration files; the feature repository generated from the local spec's views and a prod view
(workloads/render/feast_repo.py); `feast apply`; synthetic rows shaped like each view materialized from parquet;
then reads through the SDK and through `feast serve` over HTTP, the failure paths, and last a failover: the
primary is killed and lookups through the feature server must come back, with the same values, from the replica
the Sentinels promote. Bounded: 2,000 rows per view, a handful of requests, about a minute in all.
Outside CI a missing Feast venv or redis-server skips (with the reason printed); with CI=true it fails.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.loader import load_environment
from tests.conftest import require
from tools import feast_rig
from tools.feast_worker import entity_key, expected

ROWS = 2000
SAMPLE = [0, 1, 2, 997, ROWS - 1]
RECOVERY_LIMIT_S = 20.0
"""Sentinel marks the killed primary down after 1 s (DOWN_AFTER_MS of the rig) and elects within a few more."""


def _views():
    local = load_environment("local").feature_views
    prod = next(v for v in load_environment("prod").feature_views if v.name == "user-features-000")
    return [*local, prod]


@dataclass
class Live:
    rig: feast_rig.Rig
    facts: dict          # tools/feast_worker.py steps: source, materialize, check
    url: str             # `feast serve`
    setup_s: float


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    why = feast_rig.missing()
    require(not why, "; ".join(why))
    rig = feast_rig.Rig(Path(tmp_path_factory.mktemp("feast")), _views(), rows=ROWS)
    started = time.monotonic()
    try:
        rig.start_redis()
        rig.write_repo()
        rig.feast("apply")
        facts = rig.worker("steps", {"steps": ["source", "materialize", "check"], "views": rig.shapes(), "sample": SAMPLE})
        url = rig.serve()
        procs = list(rig.procs.values())
        yield Live(rig, facts, url, time.monotonic() - started)
    finally:
        rig.close()
    assert all(p.poll() is not None for p in procs), "the rig left a process running"


def _http(live: Live, shape: dict, rows: list[int]) -> tuple[int, dict]:
    names = [n for n, _, _ in shape["features"]]
    body = {"features": [f"{shape['view']}:{n}" for n in names],
            "entities": {key: [entity_key(r, t) for r in rows] for key, t in shape["entities"]}}
    return feast_rig.post_json(live.url + "/get-online-features", body)


def _columns(answer: dict) -> dict[str, list]:
    return {name: res["values"] for name, res in zip(answer["metadata"]["feature_names"], answer["results"], strict=True)}


def test_the_generated_repository_applies_and_materializes(live):
    defs = {p.name: p.read_text() for p in live.rig.repo.glob("*.py")}
    assert set(defs) == {"user_profile.py", "item_stats.py", "user_features_000.py"}
    assert "PushSource(name='item_stats_push'" in defs["item_stats.py"] and "PushSource" not in defs["user_profile.py"]
    assert "value_type=ValueType.STRING" in defs["item_stats.py"]       # the spec's string key, not Feast's default
    assert live.facts["materialize"]["seconds"] > 0
    print(f"\nsetup (redis, apply, materialize, SDK checks, feast serve): {live.setup_s:.1f} s")


def test_values_round_trip_through_the_sdk(live):
    check = live.facts["check"]
    assert check["mismatches"] == []
    for shape in live.rig.shapes():
        got = check["views"][shape["view"]]
        assert got["read"] == len(SAMPLE)
        assert got["unknown_entity"] == [None] * len(shape["features"])   # an entity never written: no values
    assert check["views"]["item_stats"]["pushed"] is True                  # the streaming view's PushSource writes online


def test_values_round_trip_through_the_feature_server(live):
    for shape in live.rig.shapes():
        status, answer = _http(live, shape, SAMPLE)
        assert status == 200, answer
        cols = _columns(answer)
        for i, row in enumerate(SAMPLE):
            for name, want in expected(shape, row).items():
                assert cols[name][i] == want, (shape["view"], row, name)
        status, answer = _http(live, shape, [ROWS + 50])
        assert status == 200 and all(v == [None] for k, v in _columns(answer).items() if k not in dict(shape["entities"]))


def test_a_wrong_entity_key_is_an_error_naming_the_keys(live):
    assert "Missing join key values" in live.facts["check"]["wrong_key"] and "user_id" in live.facts["check"]["wrong_key"]
    status, answer = feast_rig.post_json(live.url + "/get-online-features",
                                         {"features": ["user_profile:country"], "entities": {"usr_id": [1]}})
    assert status >= 400 and "Missing join key values" in str(answer)


def test_a_view_missing_from_the_repository_is_an_error(live):
    assert live.facts["check"]["missing_view"].startswith("FeatureViewNotFoundException")
    status, answer = feast_rig.post_json(live.url + "/get-online-features",
                                         {"features": ["no_such_view:x"], "entities": {"user_id": [1]}})
    assert status == 404 and "FeatureViewNotFoundException" in str(answer)


def test_lookups_survive_the_loss_of_the_primary(live):
    shape = live.rig.shapes()[0]
    live.rig.sync_replica()
    old = live.rig.master_port()
    assert old == live.rig.ports["primary"]
    live.rig.kill("primary")
    killed = time.monotonic()
    errors, status, answer = 0, 0, {}
    while time.monotonic() - killed < RECOVERY_LIMIT_S:
        status, answer = _http(live, shape, SAMPLE[:2])
        if status == 200 and _columns(answer)[shape["features"][0][0]][0] is not None:
            break
        errors += 1
        time.sleep(0.2)
    recovered = time.monotonic() - killed
    print(f"\nfailover: lookups back {recovered:.1f} s after the primary was killed, {errors} failed request(s) meanwhile")
    assert status == 200, f"no answer {RECOVERY_LIMIT_S:g} s after the primary died: {answer}\n{live.rig.log_tail()}"
    assert live.rig.master_port() == live.rig.ports["replica"]
    cols = _columns(answer)
    for i, row in enumerate(SAMPLE[:2]):
        assert {n: cols[n][i] for n in expected(shape, row)} == expected(shape, row)
