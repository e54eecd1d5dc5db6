"""Metric readers of the simulated-fleet benchmarks (scripts/bench_rollout.py,
scripts/sim_pod_throughput.py) on the local control planes of hybridml.local.

* kube-apiserver request latency from its Prometheus ``/metrics``, against the Kubernetes API call
  latency SLO (https://github.com/kubernetes/community/blob/master/sig-scalability/slos/api_call_latency.md):
  mutating calls on single objects, p99 <= 1 s per (resource, verb);
* the CPU each control-plane component has used (`component_cpu_seconds`, from /proc).

The parsing and the quantile are pure (`mutating_latency(text)`); `fetch_metrics(api)` and
`cluster_latency(name, state_dir)` read a live local control plane with the stdlib client::

    from tools.sim_metrics import cluster_latency
    print(cluster_latency("hybridml-aws-use1", state_dir_for("sim")).summary())

The histogram is cumulative since the apiserver started; pass ``baseline`` (an earlier scrape) to
measure only the calls made in between (e.g. one deployment), like the SLO's 5-minute window.
Quantiles are interpolated linearly inside a bucket, as Prometheus' ``histogram_quantile`` does.

Measurement only, so not in the installed package: no product code imports it (tools/__init__.py).
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hybridml.local.components import COMPONENTS
from hybridml.local.controlplane import api_client
from hybridml.local.kubeapi import KubeAPIError
from hybridml.local.paths import cluster_dirs, resolve_state_dir
from hybridml.local.processes import proc_stat, running_pid

DURATION_METRIC = "apiserver_request_duration_seconds"
MUTATING_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE"})  # single-object writes (not DELETECOLLECTION)
SLO_SECONDS = 1.0

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(v: str) -> str:
    return v.replace(r"\\", "\x00").replace(r"\"", '"').replace(r"\n", "\n").replace("\x00", "\\")


def _float(v: str) -> float:
    special = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
    return special[v] if v in special else float(v)


def parse_samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """(metric name, labels, value) of every sample in Prometheus text exposition format."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, _, raw_labels, value = m.group(1), m.group(2), m.group(3), m.group(4)
        labels = {k: _unescape(v) for k, v in _LABEL.findall(raw_labels or "")}
        try:
            yield name, labels, _float(value)
        except ValueError:
            continue


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The q-quantile of a cumulative histogram [(upper bound `le`, cumulative count)], as Prometheus
    computes it: linear interpolation inside the bucket holding the rank; a rank in the +Inf bucket
    gives the highest finite bound. NaN when empty."""
    bs = sorted(buckets)
    if not bs or bs[-1][1] <= 0:
        return math.nan
    total = bs[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in bs:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


@dataclass(frozen=True)
class CallLatency:
    verb: str
    resource: str  # resource[/subresource], with the group: "pods", "pods/binding", "deployments.apps"
    count: int
    p99_s: float


@dataclass
class LatencyReport:
    """Mutating-call latency of one apiserver: p99 of all mutating calls together, and per
    (resource, verb) as the SLO states it; ``ok`` when every (resource, verb) p99 is within the SLO."""

    p99_s: float
    count: int
    calls: list[CallLatency] = field(default_factory=list)  # worst p99 first
    slo_s: float = SLO_SECONDS

    @property
    def worst(self) -> CallLatency | None:
        return self.calls[0] if self.calls else None

    @property
    def ok(self) -> bool:
        return all(not (c.p99_s > self.slo_s) for c in self.calls)

    def summary(self) -> str:
        w = self.worst
        worst = f"; worst {w.verb} {w.resource} p99 {w.p99_s * 1000:.0f} ms over {w.count} calls" if w else ""
        return (f"mutating calls: {self.count}, p99 {self.p99_s * 1000:.0f} ms (SLO {self.slo_s * 1000:.0f} ms: "
                f"{'ok' if self.ok else 'VIOLATED'}){worst}")

    def to_dict(self) -> dict[str, Any]:
        return {"p99_s": self.p99_s, "count": self.count, "slo_s": self.slo_s, "ok": self.ok,
                "calls": [vars(c) for c in self.calls]}


def _histograms(text: str, metric: str, verbs: frozenset[str]) -> dict[tuple[str, str], dict[float, float]]:
    out: dict[tuple[str, str], dict[float, float]] = {}
    for name, labels, value in parse_samples(text):
        if name != f"{metric}_bucket" or labels.get("verb") not in verbs or "le" not in labels:
            continue
        if labels["verb"] == "DELETE" and labels.get("scope", "resource") != "resource":
            continue  # a DELETE of a collection (reported as DELETE): not a single-object call
        resource = labels.get("resource", "")
        if labels.get("group"):
            resource += f".{labels['group']}"
        if labels.get("subresource"):
            resource += f"/{labels['subresource']}"
        key = (labels["verb"], resource)
        le = _float(labels["le"])
        # the same (verb, resource) appears once per scope/component/version: add them up
        out.setdefault(key, {})
        out[key][le] = out[key].get(le, 0.0) + value
    return out


def mutating_latency(text: str, baseline: str | None = None, *, quantile: float = 0.99,
                     slo_s: float = SLO_SECONDS, metric: str = DURATION_METRIC,
                     verbs: frozenset[str] = MUTATING_VERBS) -> LatencyReport:
    """p99 of the mutating calls in an apiserver ``/metrics`` scrape (minus ``baseline``, an earlier
    scrape of the same apiserver, when given)."""
    now = _histograms(text, metric, verbs)
    before = _histograms(baseline, metric, verbs) if baseline else {}
    calls: list[CallLatency] = []
    total: dict[float, float] = {}
    for key, buckets in now.items():
        prev = before.get(key, {})
        delta = {le: max(0.0, c - prev.get(le, 0.0)) for le, c in buckets.items()}
        count = delta.get(math.inf, max(delta.values(), default=0.0))
        if count <= 0:
            continue
        for le, c in delta.items():
            total[le] = total.get(le, 0.0) + c
        calls.append(CallLatency(verb=key[0], resource=key[1], count=int(count),
                                 p99_s=histogram_quantile(quantile, delta.items())))
    calls.sort(key=lambda c: (-c.p99_s, -c.count, c.verb, c.resource))
    count = int(total.get(math.inf, 0.0))
    p99 = histogram_quantile(quantile, total.items()) if count else 0.0
    return LatencyReport(p99_s=p99, count=count, calls=calls, slo_s=slo_s)


def fetch_metrics(api: Any) -> str:
    """The ``/metrics`` text of the apiserver behind a :class:`~hybridml.local.kubeapi.KubeAPI`
    (the admin client of a local control plane may read it)."""
    status, data = api.request_raw("GET", "/metrics", accept="text/plain")
    if status != 200:
        raise KubeAPIError("GET", "/metrics", status, data.decode(errors="replace"))
    return data.decode()


def cluster_latency(name: str, state_dir: Any = None, baseline: str | None = None) -> LatencyReport:
    """Mutating-call latency of a local control plane brought up by ``hybridml local up``."""
    api = api_client(name, state_dir)
    try:
        return mutating_latency(fetch_metrics(api), baseline)
    finally:
        api.close()


# --- CPU of the components ----------------------------------------------------------------------
def component_cpu_seconds(state_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """CPU seconds (user + system) the running components have used so far, per component, summed over the
    clusters (for measuring where a rollout's CPU goes: take it before and after)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for paths in cluster_dirs(resolve_state_dir(state_dir)):
        for comp in COMPONENTS:
            pid = running_pid(paths, comp)
            if pid is None:
                continue
            fields = proc_stat(pid)
            if fields is not None:   # utime, stime
                out[comp] = out.get(comp, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


__all__ = ["CallLatency", "DURATION_METRIC", "LatencyReport", "MUTATING_VERBS", "SLO_SECONDS", "cluster_latency",
           "component_cpu_seconds", "fetch_metrics", "histogram_quantile", "mutating_latency", "parse_samples"]
