"""The Feast side of the real-Feast test and benchmark: runs inside .venv-feast (scripts/feast_venv.sh), never in the
project's venv, and imports nothing of the project. Driven by tools/feast_rig.py: one JSON request on stdin, one
JSON answer on stdout.

    python tools/feast_worker.py source       {"repo", "views": [shape...]}             writes each view's parquet
    python tools/feast_worker.py materialize  {"repo", "views": [shape...]}             batch source -> Redis
    python tools/feast_worker.py check        {"repo", "views": [shape...], "sample"}   SDK reads, pushes, failure paths
    python tools/feast_worker.py lookups      {"repo", "view", "rate", "seconds", "batch"} or {"runs": [...]}  SDK reads
    python tools/feast_worker.py serve        {"repo", "port"}   the feature server's app under uvicorn, timed
    python tools/feast_worker.py steps        {"steps": [command...], ...}                several in one process

A *shape* is what the rig derives from a spec view: {"view", "entities": [[key, type]], "features": [[name, dtype,
length]], "rows", "timestamp_field", "created_field", "path", "push"}. Values are a pure function of (row, feature),
so a reader can tell what it should get back without the data (`expected`).
"""
from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

KEY_BASE = 1_000_000
NOW = datetime.now(UTC).replace(microsecond=0)


def entity_key(row: int, key_type: str) -> Any:
    return f"k{KEY_BASE + row}" if key_type == "string" else KEY_BASE + row


def value(row: int, k: int, dtype: str, length: int | None) -> Any:
    """The value of feature `k` of `row`: floats are multiples of 1/8 (exact in float32 and JSON)."""
    base = dtype.removesuffix("_list")
    if dtype.endswith("_list"):
        return [value(row + j, k, base, None) for j in range(length or 16)]   # `length` counts elements here
    if base in ("int32", "int64"):
        return (row * 31 + k) % 2_000_000_000
    if base in ("float32", "float64"):
        return ((row * 7 + k) % 4096) / 8
    if base == "bool":
        return (row + k) % 2 == 0
    if base in ("string", "bytes"):
        text = f"{row}-{k}-".ljust(length or 16, "x")[: length or 16]
        return text.encode() if base == "bytes" else text
    if base == "unix_timestamp":
        return NOW - timedelta(seconds=row % 3600)
    raise ValueError(f"unknown dtype {dtype}")


def expected(shape: dict, row: int) -> dict:
    return {name: value(row, k, dtype, length) for k, (name, dtype, length) in enumerate(shape["features"])}


def _frame(shape: dict, rows: range, when: datetime):
    import pandas as pd

    data: dict[str, Any] = {key: [entity_key(r, t) for r in rows] for key, t in shape["entities"]}
    for k, (name, dtype, length) in enumerate(shape["features"]):
        data[name] = [value(r, k, dtype, length) for r in rows]
    data[shape["timestamp_field"]] = [when] * len(rows)
    if shape.get("created_field"):
        data[shape["created_field"]] = [when] * len(rows)
    frame = pd.DataFrame(data)
    casts = {"int32": "int32", "float32": "float32"}
    for name, dtype, _ in shape["features"]:
        if dtype in casts:
            frame[name] = frame[name].astype(casts[dtype])
        elif dtype == "float32_list":
            import numpy as np

            frame[name] = [np.asarray(v, dtype="float32") for v in frame[name]]
    for key, t in shape["entities"]:
        if t == "int32":
            frame[key] = frame[key].astype("int32")
    return frame


def cmd_source(req: dict) -> dict:
    for shape in req["views"]:
        _frame(shape, range(shape["rows"]), NOW - timedelta(minutes=10)).to_parquet(shape["path"])
    return {"written": [s["path"] for s in req["views"]]}


_STORES: dict = {}


def _store(repo: str):
    from feast import FeatureStore

    return FeatureStore(repo_path=repo)


def cmd_materialize(req: dict) -> dict:
    store = _store(req["repo"])
    start = time.perf_counter()
    store.materialize(NOW - timedelta(hours=1), NOW, [s["view"] for s in req["views"]])
    return {"seconds": round(time.perf_counter() - start, 3)}


def _refs(shape: dict) -> list[str]:
    return [f"{shape['view']}:{name}" for name, _, _ in shape["features"]]


def _rows(shape: dict, rows: list[int]) -> list[dict]:
    return [{key: entity_key(r, t) for key, t in shape["entities"]} for r in rows]


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, list):
        return isinstance(got, list | tuple) and len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(want, datetime):
        return got is not None and abs(got.timestamp() - want.timestamp()) < 1
    return bool(got == want)


def _error(fn) -> str:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the failure path under test: report what the SDK raised
        return f"{type(exc).__name__}: {exc}"
    return ""


def cmd_check(req: dict) -> dict:
    """Read a sample of every view back through the SDK and compare; push rows to streaming views and read them;
    then the failure paths: an unknown entity (no value), a wrong join key and a view the repository lacks."""
    store = _store(req["repo"])
    out: dict[str, Any] = {"views": {}, "mismatches": []}
    for shape in req["views"]:
        sample = [r for r in req["sample"] if r < shape["rows"]]
        got = store.get_online_features(features=_refs(shape), entity_rows=_rows(shape, sample)).to_dict()
        for i, r in enumerate(sample):
            for name, want in expected(shape, r).items():
                if not _same(got[name][i], want):
                    out["mismatches"].append(f"{shape['view']}[{r}].{name}: got {got[name][i]!r}, want {want!r}")
        missing = store.get_online_features(features=_refs(shape), entity_rows=_rows(shape, [shape["rows"] + 10])).to_dict()
        out["views"][shape["view"]] = {"read": len(sample), "unknown_entity": [missing[n][0] for n, _, _ in shape["features"]]}
        if shape.get("push"):
            row = shape["rows"] + 1
            store.push(shape["push"], _frame(shape, range(row, row + 1), NOW))
            pushed = store.get_online_features(features=_refs(shape), entity_rows=_rows(shape, [row])).to_dict()
            out["views"][shape["view"]]["pushed"] = all(_same(pushed[n][0], v) for n, v in expected(shape, row).items())
    first = req["views"][0]
    out["wrong_key"] = _error(lambda: store.get_online_features(
        features=_refs(first), entity_rows=[{"no_such_key": 1}]).to_dict())
    out["missing_view"] = _error(lambda: store.get_online_features(
        features=["no_such_view:x"], entity_rows=_rows(first, [0])).to_dict())
    return out


def cmd_lookups(req: dict) -> dict:
    """SDK lookups at a fixed rate (open loop: each call is due on a fixed schedule, and its latency counts from
    then, so a slow call's successors count their wait) for a bounded time. Errors are counted with the time they
    happened (the failover run kills the primary meanwhile). {"runs": [...]} does several runs in one process."""
    if "runs" in req:
        return {"runs": [cmd_lookups({"repo": req["repo"], **run}) for run in req["runs"]]}
    store = _STORES.get(req["repo"]) or _STORES.setdefault(req["repo"], _store(req["repo"]))
    shape, batch, rate = req["view"], req["batch"], req["rate"]
    refs = _refs(shape)
    store.get_online_features(features=refs, entity_rows=_rows(shape, [0])).to_dict()  # connect, warm the registry
    interval, n = batch / rate, int(req["seconds"] * rate / batch)
    lat, errors, ok_after = [], [], []
    if req.get("start_at_wall"):   # line up with another load generator (the failover run)
        time.sleep(max(0.0, req["start_at_wall"] - time.time()))
    t0, t0_wall = time.perf_counter(), time.time()
    for i in range(n):
        due = t0 + i * interval
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        rows = [(i * batch + j) * 7919 % shape["rows"] for j in range(batch)]
        try:
            got = store.get_online_features(features=refs, entity_rows=_rows(shape, rows)).to_dict()
            if got[shape["features"][0][0]][0] is None:
                raise LookupError("no value")
            lat.append((time.perf_counter() - due) * 1000)
            ok_after.append(due - t0)
        except Exception as exc:  # noqa: BLE001 - counted: the failover run expects some
            errors.append([round(due - t0, 3), f"{type(exc).__name__}: {str(exc)[:120]}"])
    return {"latencies_ms": lat, "ok_at": ok_after, "errors": errors, "elapsed": time.perf_counter() - t0, "requests": n,
            "t0_wall": t0_wall}


def cmd_serve(req: dict) -> dict:
    """Feast's feature server app (what `feast serve` runs) under one uvicorn worker, wrapped in an ASGI layer that
    records each lookup's time inside the server, from the request's arrival to its last response byte:
    GET /_timings returns and clears them."""
    import uvicorn
    from feast.feature_server import get_app

    store = _store(req["repo"])
    app = get_app(store, registry_ttl_sec=600)
    timings: list[float] = []

    async def timed(scope, receive, send):  # type: ignore[no-untyped-def]
        path = scope.get("path") if scope["type"] == "http" else None
        if path == "/_timings":
            body = json.dumps({"ms": list(timings)}).encode()
            timings.clear()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        if path != "/get-online-features":
            await app(scope, receive, send)
            return
        start = time.perf_counter()

        async def sent(message):  # type: ignore[no-untyped-def]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                timings.append((time.perf_counter() - start) * 1000)

        await app(scope, receive, sent)

    uvicorn.run(timed, host="127.0.0.1", port=req["port"], access_log=False, log_level="warning",
                workers=1, lifespan="on")
    return {}


def cmd_steps(req: dict) -> dict:
    """Several commands in one process (Feast's import alone costs seconds): {"steps": [command, ...], ...}."""
    return {step: COMMANDS[step](req) for step in req["steps"]}


COMMANDS = {"source": cmd_source, "materialize": cmd_materialize, "check": cmd_check, "lookups": cmd_lookups,
            "serve": cmd_serve, "steps": cmd_steps}


def main() -> None:
    req = json.loads(sys.stdin.read() if len(sys.argv) < 3 else sys.argv[2])
    result = COMMANDS[sys.argv[1]](req)
    sys.stdout.write(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
