"""The feature views' Feast fields (infra/features.py): entities with keys and types, typed features, the batch
source, entity counts against Redis memory. Bad values name file, line and field like every spec error."""
from __future__ import annotations

import copy

import pytest

from infra.errors import SpecError
from infra.features import MEMORY_HEADROOM, row_bytes
from infra.loader import load_environment, parse_environment
from tests.conftest import SMALL_SPEC, dump

FEATURES = [{"name": "country", "dtype": "string", "length": 2}, {"name": "sessions_7d", "dtype": "int32"},
            {"name": "embedding", "dtype": "float32_list", "length": 64}]


def _spec(**view) -> dict:
    spec = copy.deepcopy(SMALL_SPEC)
    spec["feature_views"][0].update(view)
    return spec


def _errors(spec: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_environment(dump(spec), "envs/fv.yaml")
    return [i.render(info.value.file) for i in info.value.issues]


def test_bare_entity_names_stay_valid_and_mean_int64_keys():
    env = parse_environment(dump(_spec()))
    entity = env.feature_views[0].entities[0]
    assert (entity.name, entity.key, entity.value_type) == ("user_id", "user_id", "int64")
    assert env.feature_views[0].features == [] and env.feature_views[0].source is None


def test_full_view_parses():
    env = parse_environment(dump(_spec(
        entities=[{"name": "user", "join_key": "user_id", "value_type": "string"}], features=FEATURES,
        source={"path": "s3://b/p/", "timestamp_field": "ts", "created_timestamp_field": "created"}, entity_count=1000)))
    view = env.feature_views[0]
    assert view.entities[0].key == "user_id" and [f.dtype for f in view.features] == ["string", "int32", "float32_list"]
    assert view.source is not None and view.source.timestamp_field == "ts"
    # the embedding's 260-byte value makes Redis keep the entity's hash as a hash table, not a listpack; TTL adds an expiry
    assert row_bytes(view) == 360 + (53 + 4) + (53 + 4) + (53 + 64 * 4 + 4) + 40
    small = view.model_copy(update={"features": view.features[:2], "ttl_seconds": 0})
    assert row_bytes(small) == 270 + (4 + 4) + (4 + 4)


@pytest.mark.parametrize("view,path,message", [
    ({"features": [{"name": "x", "dtype": "float16"}]}, "feature_views[0].features[0].dtype", "float32"),
    ({"features": [{"name": "x", "dtype": "int64", "length": 4}]}, "feature_views[0].features[0]",
     "length applies to list, string and bytes features, not int64"),
    ({"features": [{"name": "Bad-Name", "dtype": "int64"}]}, "feature_views[0].features[0].name", "pattern"),
    ({"features": [{"name": "user_id", "dtype": "int64"}]}, "feature_views[0].features[0].name",
     "feature 'user_id' is also the join key of view 'user-profile'"),
    ({"features": [{"name": "a", "dtype": "int64"}, {"name": "a", "dtype": "float32"}]}, "feature_views[0].features[1].name",
     "feature 'a' is also the feature"),
    ({"features": FEATURES, "source": {"path": "s3://b/x", "timestamp_field": "country"}}, "feature_views[0].source.timestamp_field",
     "timestamp field 'country' is also the feature"),
    ({"source": {"path": "http://example.com/x.parquet"}}, "feature_views[0].source.path", "pattern"),
    ({"entities": [{"name": "user_id", "value_type": "float"}]}, "feature_views[0].entities[0].value_type", "int64"),
    ({"entity_count": 10}, "feature_views[0].entity_count", "entity_count needs features"),
    ({"features": FEATURES, "entity_count": 10**9}, "feature_views[0].entity_count", "raise online_memory_gib to at least"),
], ids=["dtype", "length", "name", "clash-key", "duplicate", "timestamp", "source-uri", "key-type", "count-alone", "memory"])
def test_bad_feature_fields_name_file_line_and_field(view, path, message):
    rendered = _errors(_spec(**view))
    assert any(f": {path}: " in r and message in r for r in rendered), "\n".join(rendered)
    assert all(r.startswith("envs/fv.yaml:") and r.split(":")[1].isdigit() for r in rendered)


def test_one_entity_name_means_one_key_across_views():
    spec = _spec()
    spec["feature_views"].append({"name": "user-stats", "entities": [{"name": "user_id", "value_type": "string"}]})
    rendered = _errors(spec)
    assert any("feature_views[1].entities[0]: entity 'user_id' is user_id:string here but user_id:int64 in view 'user-profile'"
               in r for r in rendered), rendered


def test_memory_check_is_the_estimate_against_the_headroom():
    view = parse_environment(dump(_spec(features=FEATURES))).feature_views[0]
    fits = int(view.online_memory_gib * MEMORY_HEADROOM * 2**30 / row_bytes(view))
    parse_environment(dump(_spec(features=FEATURES, entity_count=fits)))
    assert _errors(_spec(features=FEATURES, entity_count=fits + 1000))


def test_shipped_views_have_feast_shapes():
    for name in ("local", "dev", "prod"):
        env = load_environment(name)
        for view in env.feature_views:
            assert view.features and view.source and view.entity_count, (name, view.name)
            assert view.entity_count * row_bytes(view) <= view.online_memory_gib * MEMORY_HEADROOM * 2**30
    prod = load_environment("prod")
    counts = sorted(v.entity_count or 0 for v in prod.feature_views)
    assert counts[0] >= 250_000 and counts[-1] >= 10_000_000                      # hundreds of thousands to tens of millions
    assert max(len(v.features) for v in prod.feature_views) >= 20
    assert any(f.dtype == "float32_list" and (f.length or 0) >= 64 for v in prod.feature_views for f in v.features)
