"""Freshness of a streaming view as a reader sees it: runs inside .venv-feast (Feast's SDK, reading Redis through the
Sentinels as any online reader does) and imports nothing of the project. Driven by tools/flink_rig.py.

    python tools/stream_watch.py      then on stdin, one line: {"repo", "view", "key": [name, type], "feature", "first",
                                      "rows", "poll_ms", "deadline_s", "window"}

Imports Feast at once (seconds of CPU: the rig starts it early, while Redis and Feast come up), reads the request,
prints `ready` once connected, then polls the next `window` entities not yet seen (entity n's
key is `k<n>` for string keys, n otherwise), every `poll_ms`, until every one of `rows` entities from `first` is
readable or `deadline_s` passed. The answer (one JSON line): per entity seen, [n, wall time first seen, its event
time as stored], so freshness = seen - event time, within one poll (`poll_ms` plus one read) of the truth.
"""
from __future__ import annotations

import json
import sys
import time


def main() -> None:
    from feast import FeatureStore

    req = json.loads(sys.stdin.readline())
    store = FeatureStore(repo_path=req["repo"])
    key, key_type = req["key"]
    ref = f"{req['view']}:{req['feature']}"

    def entity(n: int) -> object:
        return f"k{n}" if key_type == "string" else n

    first, rows = req["first"], req["rows"]
    store.get_online_features(features=[ref], entity_rows=[{key: entity(first - 1)}])   # connect, load the registry
    print("ready", flush=True)
    end, next_n = first + rows, first
    waiting: list[int] = []   # polled and not yet seen, oldest first
    seen: list[list[float]] = []
    polls = 0
    deadline = time.time() + req["deadline_s"]
    while (waiting or next_n < end) and time.time() < deadline:
        fill = min(end, next_n + req["window"] - len(waiting))
        window, next_n = waiting + list(range(next_n, fill)), max(next_n, fill)
        resp = store.get_online_features(features=[ref], entity_rows=[{key: entity(n)} for n in window])
        now = time.time()
        polls += 1
        names = list(resp.proto.metadata.feature_names.val)
        result = resp.proto.results[names.index(req["feature"])]
        waiting = []
        for n, value, ts in zip(window, result.values, result.event_timestamps, strict=True):
            # a missing entity comes back PRESENT with an empty value and no timestamp from the Redis store
            if value.WhichOneof("val") is not None and (ts.seconds or ts.nanos):
                seen.append([n, now, ts.seconds + ts.nanos / 1e9])
            else:
                waiting.append(n)
        time.sleep(req["poll_ms"] / 1000)
    pending = waiting + list(range(next_n, end))
    print(json.dumps({"seen": seen, "missing": pending[:20], "missing_count": len(pending), "polls": polls}), flush=True)


if __name__ == "__main__":
    main()
