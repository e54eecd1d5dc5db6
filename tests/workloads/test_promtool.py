"""promtool on the rendered monitoring of local and dev.

- every rule group (each PrometheusRule of each site) passes `promtool check rules`;
- every dashboard panel's PromQL parses (loaded as recording rules) and reads only series the rules record;
- every alert fires on synthetic series that breach its objective and stays silent on series that keep it, plus
  breaching series of a look-alike workload or pipeline (`promtool test rules`). The series are written the way
  their producers expose them (vLLM, Triton's own counters and latency summaries, OpenTelemetry for CPU services, DCGM, the
  application's metric contract), with the workload names read from the rendered Services/InferenceServices, so
  a selector that misses what a producer emits fails here.

Needs promtool (Debian package `prometheus`): skipped outside CI when it is missing, a failure in CI.
"""
from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from infra import labels as L
from infra.objectives import AbMetricDelta, ModeratorFlagRate, PredictionDrift
from infra.spec import Pipeline
from tests.conftest import require
from tests.workloads.conftest import rendered
from workloads import planning
from workloads.render import dashboards, meta, quality, slo

STACKS = ["local", "dev"]
PLACEHOLDER = {"series": 'up{job="promtool-placeholder"}', "values": "1x400"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    require(path is not None, "promtool is not installed (Debian: apt-get install prometheus)")
    assert path is not None
    return path


def _run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _dump(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=1000))
    return path


# --------------------------------------------------------------------------- what the stacks render


@dataclass
class Pipe:
    """One pipeline's PrometheusRule on one site, with the workload names its producers' series carry."""

    site: str
    namespace: str
    p: Pipeline
    workloads: dict[str, str]        # variant ("" without A/B) -> Service / InferenceService name
    groups: list[dict]

    @property
    def name(self) -> str:
        return self.p.name

    @property
    def engine(self) -> str:
        return self.p.engine.kind

    @property
    def match(self) -> str:
        return f'pipeline="{self.name}",site="{self.site}"'

    def alerts(self) -> list[dict]:
        return [r for g in self.groups for r in g["rules"] if "alert" in r]


def pipes(stack) -> list[Pipe]:
    out = []
    for rule in stack.k8s("PrometheusRule"):
        name = rule.manifest["metadata"]["labels"].get(L.PIPELINE)
        if not name:
            continue
        p = stack.env.pipeline(name)
        kind = "InferenceService" if p.engine.kind == "triton" else "Service"
        workloads = {}
        for o in stack.k8s(kind, rule.site):
            lbls = o.manifest["metadata"]["labels"]
            if (lbls.get(L.PIPELINE) == name and o.namespace == rule.namespace
                    and lbls.get("app.kubernetes.io/component") == "model-server"):
                workloads[lbls.get(meta.VARIANT, "")] = o.obj_name
        assert workloads, f"no model-server workloads of {name} on {rule.site}"
        out.append(Pipe(rule.site, rule.namespace, p, workloads, rule.manifest["spec"]["groups"]))
    return out


# --------------------------------------------------------------------------- series as their producers write them


def _num(x: float) -> str:
    return slo.num(x)


def series(name: str, lbls: dict[str, str], values: str) -> dict:
    return {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in lbls.items()) + "}", "values": values}


def counter(per_step: float, steps: int, start: float = 0) -> str:
    return f"{_num(start)}+{_num(per_step)}x{steps}"


def gauge(value: float, steps: int) -> str:
    return f"{_num(value)}+0x{steps}"


def requests(pipe: Pipe, w: str, ok: float, err: float, steps: int) -> list[dict]:
    """Request counters of workload `w`: `ok` answered and `err` server errors per step."""
    out = []
    for good, per in ((True, ok), (False, err)):
        if not good and per == 0:
            continue  # a labelled counter appears with its first increment
        if pipe.engine == "vllm":
            out.append(series("http_requests_total", {"namespace": pipe.namespace, "service": w, "method": "POST",
                                                      "handler": "/v1/chat/completions", "status": "2xx" if good else "5xx"},
                              counter(per, steps)))
        elif pipe.engine == "triton":
            out.append(series("nv_inference_request_success" if good else "nv_inference_request_failure", {
                "namespace": pipe.namespace, "pod": gpu_pod(pipe, w), "model": pipe.p.name, "version": "1"},
                counter(per, steps)))
        else:
            out.append(series("http_server_request_duration_seconds_count", {
                "namespace": pipe.namespace, "service": w, "http_request_method": "POST",
                "http_response_status_code": "200" if good else "500"}, counter(per, steps)))
    return out


def latency(pipe: Pipe, w: str, slow: bool, steps: int) -> list[dict]:
    """A latency histogram whose requests all take 0.5x the objective (fast) or between 0.5x and 2x (slow)."""
    objective = pipe.p.latency.service_ms / 1000
    if pipe.engine == "triton":   # a summary: Triton's p99 in microseconds, 0.5x or 1.5x the objective
        p99 = objective * (1.5 if slow else 0.5) * 1e6
        return [series("nv_inference_request_summary_us", {"namespace": pipe.namespace, "pod": gpu_pod(pipe, w),
                                                           "model": pipe.p.name, "version": "1", "quantile": "0.99"},
                       gauge(p99, steps))]
    if pipe.engine == "vllm":
        name, lbls, scale = "vllm:e2e_request_latency_seconds_bucket", {"namespace": pipe.namespace, "service": w}, 1
    else:
        name, lbls, scale = "http_server_request_duration_seconds_bucket", {"namespace": pipe.namespace, "service": w}, 1
    bounds = [(f"{objective * 0.5 * scale:g}", 0 if slow else 10), (f"{objective * 2 * scale:g}", 10), ("+Inf", 10)]
    return [series(name, {**lbls, "le": le}, counter(per, steps)) for le, per in bounds]


def gpu_pod(pipe: Pipe, w: str) -> str:
    return f"{w}-predictor-7c9d8f6b5-k2x8q" if pipe.engine == "triton" else f"{w}-5d8f7c9b6-x7k2p"


def vllm_gauges(pipe: Pipe, w: str, waiting: float, running: float, tokens_per_step: float, steps: int) -> list[dict]:
    lbls = {"namespace": pipe.namespace, "service": w, "pod": gpu_pod(pipe, w), "model_name": pipe.name}
    return [series("vllm:num_requests_waiting", lbls, gauge(waiting, steps)),
            series("vllm:num_requests_running", lbls, gauge(running, steps)),
            series("vllm:generation_tokens_total", lbls, counter(tokens_per_step, steps, start=500))]


# --------------------------------------------------------------------------- scenarios


@dataclass
class Case:
    """Series that breach one alert's objective and series that keep it."""

    breach: list[dict]
    healthy: list[dict]
    eval_minutes: int
    probe: str                         # a recorded series that must exist in the healthy case (it was evaluated)
    probe_count: int = 1
    variants: list[str] = field(default_factory=lambda: [""])   # one expected alert per entry (label `variant`)
    interval_minutes: int = 1


def _rule_labels(rule: dict) -> dict[str, str]:
    return {k: v for k, v in rule["labels"].items()}


def _objective(pipe: Pipe, rule: dict):
    lbls = rule["labels"]
    return next(o for o in pipe.p.quality
                if o.kind == lbls["objective"] and (not isinstance(o, AbMetricDelta) or o.metric == lbls.get("metric")))


def _baseline(p: Pipeline, o: AbMetricDelta) -> str:
    return o.baseline or max(p.variants, key=lambda v: v.weight).name


def _ab_series(pipe: Pipe, o: AbMetricDelta, drop: float, steps: int, pipeline: str | None = None,
               metric: str | None = None) -> list[dict]:
    base = _baseline(pipe.p, o)
    per = max(1000, o.min_events)
    out = []
    for v in sorted(pipe.workloads):
        d = 0 if v == base else drop
        if o.metric == "success_ratio":
            out += requests(pipe, pipe.workloads[v], per * (1 - d), per * d, steps)
        else:
            lbls = {"pipeline": pipeline or pipe.name, "variant": v, "metric": metric or o.metric}
            out.append(series("hybridml_ab_events_total", lbls, counter(per, steps)))
            out.append(series("hybridml_ab_good_events_total", lbls, counter(per * (0.9 - d), steps)))
    return out


def _score_buckets(pipe: Pipe, o: PredictionDrift, shift_bin: int | None, steps_ref: int, steps_live: int,
                   integral_le: str, pipeline: str | None = None) -> list[dict]:
    """Cumulative score buckets: uniform over the bins for `steps_ref` steps, then uniform again (no shift) or every
    score in bin `shift_bin`. `integral_le`: how the exporter writes integral bounds ('1' Go, '1.0' Python)."""
    bins = len(o.buckets) + 1
    per_bin = max(10, math.ceil(o.min_events / 6))
    out = []
    for i, bound in enumerate([*o.buckets, math.inf]):
        before = (i + 1) * per_bin
        after = before if shift_bin is None else (bins * per_bin if i >= shift_bin else 0)
        le = "+Inf" if bound == math.inf else (str(int(bound)) if integral_le == "go" and float(bound).is_integer() else repr(float(bound)))
        values = f"{counter(before, steps_ref)} {counter(after, steps_live - 1, start=before * steps_ref + after)}"
        out.append(series("hybridml_prediction_score_bucket", {"pipeline": pipeline or pipe.name, "le": le}, values))
    return out


def _contract_present(pipe: Pipe, rule: dict) -> list[dict]:
    """The application's series that keep a PipelineQualitySignalMissing alert silent."""
    o = _objective(pipe, rule)
    if isinstance(o, AbMetricDelta):
        return _ab_series(pipe, o, 0, 80)
    if isinstance(o, PredictionDrift):
        return [series("hybridml_prediction_score_bucket", {"pipeline": pipe.name, "le": "+Inf"}, counter(10, 80))]
    return [series("hybridml_moderation_reviewed_total", {"pipeline": pipe.name}, counter(100, 80)),
            series("hybridml_moderation_flags_total", {"pipeline": pipe.name}, counter(0.1, 80))]


def case(pipe: Pipe, rule: dict) -> Case:
    name, m = rule["alert"], pipe.match
    ws = sorted(pipe.workloads.values())
    budget = 1 - pipe.p.availability
    if name == "PipelineLatencyAboveSLO":
        return Case([x for w in ws for x in latency(pipe, w, True, 40)],
                    [x for w in ws for x in latency(pipe, w, False, 40)] + latency(pipe, ws[0] + "-decoy", True, 40),
                    30, f"{slo.LATENCY_P99}{{{m}}}")
    if name in ("PipelineErrorBudgetFastBurn", "PipelineErrorBudgetSlowBurn"):
        limit = (slo.FAST_BURN if "Fast" in name else slo.SLOW_BURN) * budget
        bad, good = min(0.95, 2 * limit), limit / 2
        return Case([x for w in ws for x in requests(pipe, w, 1000 * (1 - bad), 1000 * bad, 80)],
                    [x for w in ws for x in requests(pipe, w, 1000 * (1 - good), 1000 * good, 80)]
                    + requests(pipe, ws[0] + "-decoy", 100, 900, 80),
                    70, f"{slo.ERROR_RATIO.format(window='1h')}{{{m}}}")
    if name == "PipelineQueueBacklog":
        depth = slo.QUEUE_FACTOR * planning.scaling(pipe.p, 1).queue_threshold
        return Case([x for w in ws for x in vllm_gauges(pipe, w, depth + 5, 4, 100, 40)],
                    [x for w in ws for x in vllm_gauges(pipe, w, depth // 2, 4, 100, 40)]
                    + vllm_gauges(pipe, ws[0] + "-decoy", depth * 10, 4, 100, 40),
                    30, f"{slo.QUEUE_WAITING}{{{m}}}")
    if name == "PipelineTokenGenerationStalled":
        return Case([x for w in ws for x in vllm_gauges(pipe, w, 0, 3, 0, 40)],
                    [x for w in ws for x in vllm_gauges(pipe, w, 0, 3, 200, 40)] + vllm_gauges(pipe, ws[0] + "-decoy", 0, 3, 0, 40),
                    25, f"{slo.TOKENS}{{{m}}}")
    if name == "PipelineGpusIdle":
        def util(w: str, value: float) -> dict:
            return series("DCGM_FI_DEV_GPU_UTIL", {"namespace": pipe.namespace, "pod": gpu_pod(pipe, w), "gpu": "0",
                                                   "container": "vllm", "Hostname": "node-1"}, gauge(value, 80))
        return Case([util(w, 1) for w in ws], [util(w, 60) for w in ws] + [util(ws[0] + "-decoy", 0)],
                    370, f"{slo.GPU_UTIL}{{{m}}}", interval_minutes=5)
    o = _objective(pipe, rule)
    q = f'{quality.VALUE}{{{m},objective="{o.kind}"}}'
    if name == "PipelineAbVariantRegression":
        assert isinstance(o, AbMetricDelta)
        others = [v for v in sorted(pipe.workloads) if v != _baseline(pipe.p, o)]
        decoy = [] if o.metric == "success_ratio" else (_ab_series(pipe, o, 0.8, 40, pipeline=pipe.name + "-decoy")
                                                        + _ab_series(pipe, o, 0.8, 40, metric="decoy"))
        return Case(_ab_series(pipe, o, min(0.85, 2 * o.max_drop), 40), _ab_series(pipe, o, o.max_drop / 2, 40) + decoy,
                    30, f'{quality.VALUE}{{{m},objective="{o.kind}",metric="{o.metric}"}}', len(others), others)
    if name == "PipelinePredictionDrift":
        assert isinstance(o, PredictionDrift)
        ref, live = 7 * 24, 7   # hourly steps: a week of reference, then 7 hours
        assert o.reference == "7d" and o.window == "6h", "the drift scenario is written for the 6h/7d windows"
        return Case(_score_buckets(pipe, o, 3, ref, live, "go") + [PLACEHOLDER],
                    _score_buckets(pipe, o, None, ref, live, "python") + _score_buckets(pipe, o, 3, ref, live, "go", pipe.name + "-decoy"),
                    (ref + live - 1) * 60, q, interval_minutes=60)
    if name == "PipelineModeratorFlagRateHigh":
        assert isinstance(o, ModeratorFlagRate)
        per = max(100, o.min_events)

        def flags(share: float, pipeline: str) -> list[dict]:
            return [series("hybridml_moderation_reviewed_total", {"pipeline": pipeline}, counter(per, 50)),
                    series("hybridml_moderation_flags_total", {"pipeline": pipeline}, counter(per * share, 50))]
        return Case(flags(min(0.95, 2 * o.max), pipe.name), flags(o.max / 2, pipe.name) + flags(0.9, pipe.name + "-decoy"), 40, q)
    if name == "PipelineQualitySignalMissing":
        return Case([PLACEHOLDER], _contract_present(pipe, rule), 70, "")
    raise AssertionError(f"no scenario for alert {name}: add one")


def _expected(rule: dict, variants: list[str]) -> list[dict]:
    out = []
    for v in variants:
        lbls = {**_rule_labels(rule), **({"variant": v} if v else {})}
        notes = {k: val.replace("{{ $labels.variant }}", v) for k, val in rule["annotations"].items()}
        out.append({"exp_labels": lbls, "exp_annotations": notes})
    return out


def _same(rule: dict, other: dict) -> bool:
    return rule["alert"] == other["alert"] and rule["labels"] == other["labels"]


def promtool_groups(pipe: Pipe, rules_file: str) -> dict[int, list[dict]]:
    """promtool test groups by evaluation interval (minutes): per alert, one breaching and one healthy group."""
    out: dict[int, list[dict]] = {}
    alerts = pipe.alerts()
    for rule in alerts:
        c = case(pipe, rule)
        # Same-named alerts of other objectives get series that keep them quiet, so only this one may fire.
        quiet = [x for other in alerts if other["alert"] == rule["alert"] and not _same(rule, other)
                 for x in case(pipe, other).healthy]
        label = f"{pipe.site}/{pipe.name}/{rule['alert']}/{rule['labels'].get('objective', '')}{rule['labels'].get('metric', '')}"
        at = f"{c.eval_minutes}m"
        probe = [] if not c.probe else [{"expr": f"count({c.probe})", "eval_time": at,
                                         "exp_samples": [{"labels": "{}", "value": c.probe_count}]}]
        for kind, inputs, expected in (("breach", c.breach + quiet, _expected(rule, c.variants)), ("healthy", c.healthy + quiet, [])):
            group = {"name": f"{label} {kind}", "interval": f"{c.interval_minutes}m", "input_series": inputs,
                     "alert_rule_test": [{"eval_time": at, "alertname": rule["alert"], "exp_alerts": expected}]}
            if kind == "healthy" and probe:
                group["promql_expr_test"] = probe
            out.setdefault(c.interval_minutes, []).append(group)
    return out


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", STACKS)
def test_every_rule_group_passes_promtool_check(name, promtool, tmp_path):
    stack = rendered(name)
    files = []
    for i, o in enumerate(stack.k8s("PrometheusRule")):
        files.append(_dump(tmp_path / f"{o.site}-{o.namespace}-{o.obj_name}-{i}.yaml", {"groups": o.manifest["spec"]["groups"]}))
    assert len(files) >= len(stack.env.pipelines)
    proc = _run(promtool, "check", "rules", *[f.name for f in files], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("SUCCESS") == len(files)


def test_promtool_check_rejects_a_broken_rule(promtool, tmp_path):
    bad = {"groups": [{"name": "x", "rules": [{"record": "a:b:rate5m", "expr": "sum(rate(x[5m])"}]}]}
    proc = _run(promtool, "check", "rules", _dump(tmp_path / "bad.yaml", bad).name, cwd=tmp_path)
    assert proc.returncode != 0


GRAFANA_VARIABLES = {"$site": ".*", "$tier": ".*", "$pipeline": "chat-small"}


def _grafana(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown dashboard variable in {expr}"
    return expr


@pytest.mark.parametrize("name", STACKS)
def test_every_dashboard_query_parses_and_reads_recorded_series(name, promtool, tmp_path):
    stack = rendered(name)
    boards = {json.dumps(json.loads(v), sort_keys=True) for o in stack.k8s("ConfigMap")
              if o.manifest["metadata"]["labels"].get(dashboards.DASHBOARD_LABEL) == "1"
              for v in o.manifest["data"].values()}
    assert len(boards) == 2, "one fleet and one pipeline dashboard, the same on every site"
    exprs = sorted({q for b in boards for q in dashboards.queries(json.loads(b))})
    rules = [{"record": f"hybridml_dashboard_query_{i}", "expr": _grafana(e)} for i, e in enumerate(exprs)]
    proc = _run(promtool, "check", "rules", _dump(tmp_path / "dashboards.yaml", {"groups": [{"name": "q", "rules": rules}]}).name,
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recorded = {r["record"] for o in stack.k8s("PrometheusRule") for g in o.manifest["spec"]["groups"]
                for r in g["rules"] if "record" in r}
    read = {m for e in exprs for m in re.findall(r"hybridml:[a-z0-9_:]+", e)}
    assert read <= recorded, f"dashboards read series no rule records: {sorted(read - recorded)}"


@pytest.mark.parametrize("name", STACKS)
def test_every_alert_fires_on_a_breach_and_only_then(name, promtool, tmp_path):
    stack = rendered(name)
    files, alerts = [], set()
    for i, pipe in enumerate(pipes(stack)):
        rules_file = _dump(tmp_path / f"rules-{i}.yaml", {"groups": pipe.groups}).name
        alerts |= {(pipe.name, r["alert"]) for r in pipe.alerts()}
        for minutes, groups in promtool_groups(pipe, rules_file).items():
            files.append(_dump(tmp_path / f"test-{i}-{minutes}m.yaml", {
                "rule_files": [rules_file], "evaluation_interval": f"{minutes}m", "tests": groups}).name)
    kinds = {a for _, a in alerts}
    assert {"PipelineLatencyAboveSLO", "PipelineErrorBudgetFastBurn", "PipelineErrorBudgetSlowBurn"} <= kinds
    if name == "local":
        assert {"PipelineQueueBacklog", "PipelineTokenGenerationStalled", "PipelineGpusIdle", "PipelineAbVariantRegression",
                "PipelinePredictionDrift", "PipelineModeratorFlagRateHigh", "PipelineQualitySignalMissing"} <= kinds
    proc = _run(promtool, "test", "rules", *files, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_a_rule_that_misses_its_breach_fails_the_promtool_test(promtool, tmp_path):
    """The scenarios can fail: with the latency threshold raised a thousandfold the breach no longer fires."""
    pipe = next(p for p in pipes(rendered("local")) if p.name == "chat-small")
    broken = copy.deepcopy(pipe.groups)
    rule = next(r for g in broken for r in g["rules"] if r.get("alert") == "PipelineLatencyAboveSLO")
    rule["expr"] = re.sub(r"> ([0-9.]+)$", lambda m: f"> {float(m.group(1)) * 1000:g}", rule["expr"])
    pipe = Pipe(pipe.site, pipe.namespace, pipe.p, pipe.workloads, broken)
    rules_file = _dump(tmp_path / "rules.yaml", {"groups": broken}).name
    groups = [g for g in promtool_groups(pipe, rules_file)[1] if g["name"].endswith("PipelineLatencyAboveSLO/ breach")]
    assert len(groups) == 1
    test = _dump(tmp_path / "test.yaml", {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": groups})
    proc = _run(promtool, "test", "rules", test.name, cwd=tmp_path)
    assert proc.returncode != 0 and "PipelineLatencyAboveSLO" in proc.stdout + proc.stderr
