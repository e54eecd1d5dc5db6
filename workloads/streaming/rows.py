"""Rows of a streaming view: a record from the stream checked against the view's columns (`parse_record`), the
bounded synthetic stream shaped like the view (`synthetic_row`), and a batch of rows as the body of Feast's `/push`
(`push_body`). Standard library only.

A record is one JSON object with every join key, every feature and the timestamp field (ISO 8601 or epoch seconds);
the created-timestamp field, when the view has one, is filled with the ingest time if the record lacks it. A record
that does not fit is a `MalformedRow` naming the column and the reason: the job drops it, counts it and logs it,
since one bad record must not stop a view's freshness.
"""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from workloads.streaming.config import Column, JobConfig

INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class MalformedRow(ValueError):
    pass


def iso(seconds: float) -> str:
    """Epoch seconds as Feast's push reads a timestamp (ISO 8601, UTC, microseconds)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def epoch(value: Any, column: str) -> float:
    """A record's timestamp (epoch seconds or ISO 8601) as epoch seconds."""
    if isinstance(value, bool) or value is None:
        raise MalformedRow(f"{column}: {value!r} is no timestamp (ISO 8601 or epoch seconds)")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise MalformedRow(f"{column}: {value!r} is no timestamp")
        return float(value)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise MalformedRow(f"{column}: {value!r} is no timestamp (ISO 8601 or epoch seconds)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _scalar(value: Any, dtype: str, where: str) -> Any:
    if dtype == "bool":
        if isinstance(value, bool):
            return value
    elif dtype in INT_RANGE:
        low, high = INT_RANGE[dtype]
        if isinstance(value, int) and not isinstance(value, bool):
            if low <= value <= high:
                return value
            raise MalformedRow(f"{where}: {value} is out of {dtype} range")
    elif dtype in ("float32", "float64"):
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif dtype == "string":
        if isinstance(value, str):
            return value
    raise MalformedRow(f"{where}: {value!r} is not a {dtype}")


def _value(col: Column, value: Any) -> Any:
    if value is None:
        raise MalformedRow(f"{col.name}: missing (every key and feature is required)")
    if col.is_list:
        if not isinstance(value, list):
            raise MalformedRow(f"{col.name}: {value!r} is not a list of {col.element}")
        return [_scalar(v, col.element, f"{col.name}[{i}]") for i, v in enumerate(value)]
    return _scalar(value, col.dtype, col.name)


def check_row(cfg: JobConfig, record: Any, now: float) -> dict[str, Any]:
    """A decoded record -> the row to push: every key and feature typed, timestamps as ISO strings."""
    if not isinstance(record, dict):
        raise MalformedRow(f"record is a {type(record).__name__}, not a JSON object")
    row = {col.name: _value(col, record.get(col.name)) for col in cfg.columns}
    row[cfg.timestamp_field] = iso(epoch(record.get(cfg.timestamp_field), cfg.timestamp_field))
    if cfg.created_field:
        created = record.get(cfg.created_field)
        row[cfg.created_field] = iso(now if created is None else epoch(created, cfg.created_field))
    return row


def parse_record(cfg: JobConfig, raw: str | bytes, now: float) -> dict[str, Any]:
    """One record of the stream (a JSON object) -> the row to push; MalformedRow naming the column otherwise."""
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRow(f"not JSON: {exc}") from None
    return check_row(cfg, record, now)


def event_seconds(cfg: JobConfig, row: dict[str, Any]) -> float:
    return epoch(row[cfg.timestamp_field], cfg.timestamp_field)


# ---- the bounded synthetic stream (local runs): entity n gets values that are a pure function of (n, feature)

def entity_key(col: Column, n: int) -> Any:
    return f"k{n}" if col.dtype == "string" else n


def synthetic_value(col: Column, n: int, k: int) -> Any:
    """Feature `k` of entity `n`: floats are multiples of 1/8 (exact in float32 and JSON); a list has `length`
    elements (default 4), a string `length` characters (default 8)."""
    if col.is_list:
        return [synthetic_value(Column(col.name, col.element), n + j, k) for j in range(col.length or 4)]
    if col.dtype in INT_RANGE:
        return (n * 31 + k) % 2_000_000_000
    if col.dtype in ("float32", "float64"):
        return ((n * 7 + k) % 4096) / 8
    if col.dtype == "bool":
        return (n + k) % 2 == 0
    return f"{n}-{k}-".ljust(col.length or 8, "x")[: col.length or 8]


def synthetic_features(cfg: JobConfig, n: int) -> dict[str, Any]:
    return {col.name: synthetic_value(col, n, k) for k, col in enumerate(cfg.features)}


def synthetic_record(cfg: JobConfig, n: int, event_time: float) -> dict[str, Any]:
    """Entity `n`'s record as a producer would write it to the topic (event time in epoch seconds)."""
    return {**{col.name: entity_key(col, n) for col in cfg.keys}, **synthetic_features(cfg, n), cfg.timestamp_field: event_time}


# ---- the push

def push_body(cfg: JobConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Feast's `/push` request: the rows as columns, to the online store only (the batch source is the offline copy)."""
    names = [c.name for c in cfg.columns] + [cfg.timestamp_field] + ([cfg.created_field] if cfg.created_field else [])
    return {"push_source_name": cfg.push_source, "to": "online", "df": {n: [r[n] for r in rows] for n in names}}
