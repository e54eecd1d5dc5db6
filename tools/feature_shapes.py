"""Feature-view shapes for the generated environments (tools/generate.py): entities, typed features with value
sizes, entity counts that fit the view's Redis, and a batch source. Deterministic per (seed, view index), and drawn
from a random stream of their own so that adding them leaves every other generated figure as it was.

Shapes after public descriptions of game-platform recommendation features: per-user profile and engagement
counters with a learned embedding (64-128 floats), per-experience (item) popularity counters over windows,
tags and an item embedding. Entity counts: millions of users and hundreds of thousands to millions of items
per view, capped by what the view's `online_memory_gib` holds (infra.features.check_feature_views).
"""
from __future__ import annotations

import random

from infra.features import MEMORY_HEADROOM, FeatureField, row_bytes
from infra.spec import FeatureView

USER_BASE = [("country", "string", 2), ("locale", "string", 5), ("platform", "string", 8), ("account_age_days", "int32", None),
             ("sessions_7d", "int32", None), ("minutes_played_7d", "float32", None), ("purchases_30d", "int32", None),
             ("spend_30d_usd", "float32", None), ("friends", "int32", None), ("is_premium", "bool", None),
             ("churn_score", "float32", None), ("chat_messages_7d", "int64", None)]
ITEM_BASE = [("visits_1h", "int64", None), ("visits_24h", "int64", None), ("likes_24h", "int32", None),
             ("ctr_1h", "float32", None), ("avg_playtime_min", "float32", None), ("concurrent_players", "int32", None),
             ("genre", "string", 12), ("maturity_rating", "string", 4), ("price", "int32", None), ("tags", "string_list", 8)]
GENRES = ["action", "adventure", "fighting", "horror", "obby", "puzzle", "racing", "roleplay", "shooter", "simulation",
          "social", "sports", "strategy", "survival", "tycoon", "town"]
USER_COUNTS = [2_000_000, 5_000_000, 10_000_000, 20_000_000, 40_000_000]
ITEM_COUNTS = [250_000, 500_000, 1_000_000, 2_000_000, 5_000_000]


def shape(index: int, name: str, pii: bool, memory_gib: float, streaming: bool, env_name: str, seed: int) -> dict:
    """The Feast part of generated view `index` (keys: entities, features, source, entity_count)."""
    rng = random.Random(seed * 7919 + index)
    base = USER_BASE if pii else ITEM_BASE
    features = [{"name": n, "dtype": d, **({"length": ln} if ln else {})} for n, d, ln in base[: rng.randint(6, len(base))]]
    prefix = "affinity" if pii else "share"
    features += [{"name": f"{prefix}_{g}", "dtype": "float32"} for g in GENRES[: rng.choice([0, 4, 8, 16])]]
    if rng.random() < 0.7:
        features.append({"name": "user_embedding" if pii else "item_embedding", "dtype": "float32_list",
                         "length": rng.choice([32, 64, 128])})
    key = "user_id" if pii else "item_id"
    probe = FeatureView(name=name, entities=[key], features=[FeatureField.model_validate(f) for f in features])
    fits = int(memory_gib * MEMORY_HEADROOM * 2**30 / row_bytes(probe))
    counts = [c for c in (USER_COUNTS if pii else ITEM_COUNTS) if c <= fits] or [fits]
    source = {"path": f"s3://hybridml-features/{env_name}/{name}/", "timestamp_field": "event_timestamp"}
    if streaming:
        source["created_timestamp_field"] = "created_at"   # the stream sink may write one event time twice
    return {"entities": [key], "features": features, "source": source, "entity_count": rng.choice(counts)}
