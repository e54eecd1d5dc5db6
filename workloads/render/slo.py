"""Operational SLO rules of one pipeline on one site: recording rules with a per-pipeline series for every signal
(labels pipeline, site, engine, tier: what the dashboards and the quality rules read) and the alerts. Pure.

Signals and their producers (all scraped by the ServiceMonitors/PodMonitors of `observability.py`):
- requests and server errors: vLLM's HTTP instrumentation `http_requests_total{status="5xx"}`, Triton's own
  `nv_inference_request_success` / `nv_inference_request_failure` of its predictor pods (KServe Standard mode runs no
  Knative queue-proxy), CPU services' OpenTelemetry `http.server.request.duration`
  (`http_server_request_duration_seconds_count`);
- latency: vLLM's and the CPU services' histograms (vLLM `vllm:e2e_request_latency_seconds`); Triton's latency
  summaries (`nv_inference_request_summary_us`, quantile 0.99, `--metrics-config=summary_latencies=true`), taken as
  the worst pod's (a summary's quantiles cannot be merged across pods);
- vLLM queue depth `vllm:num_requests_waiting` and generated tokens `vllm:generation_tokens_total`;
- GPU utilisation: DCGM exporter `DCGM_FI_DEV_GPU_UTIL`, attributed to the pods that hold the GPUs.

Error budget: `availability` over 30 days; multi-window burn-rate alerts as in the Google SRE workbook (page at
14.4x the budget over 1h and 5m, ticket at 6x over 6h and 30m).
"""
from __future__ import annotations

from dataclasses import dataclass

from infra.spec import Environment, Pipeline
from workloads import planning
from workloads.render import meta, triton

# Recorded series (one per pipeline and site; labels pipeline, site, engine, tier)
PLANNED_REPLICAS = "hybridml:pipeline_planned_replicas"
REQUESTS = "hybridml:pipeline_requests:rate5m"
ERRORS = "hybridml:pipeline_errors:rate5m"
ERROR_RATIO = "hybridml:pipeline_errors:ratio_rate{window}"
ERROR_BUDGET = "hybridml:pipeline_error_budget:ratio"
LATENCY_P99 = "hybridml:pipeline_latency_p99:seconds"
LATENCY_OBJECTIVE = "hybridml:pipeline_latency_objective:seconds"
QUEUE_WAITING = "hybridml:pipeline_queue_waiting:avg"
QUEUE_OBJECTIVE = "hybridml:pipeline_queue_objective:avg"
TOKENS = "hybridml:pipeline_generation_tokens:rate5m"
GPU_UTIL = "hybridml:pipeline_gpu_utilization:avg5m"

BURN_WINDOWS = ("5m", "30m", "1h", "6h")
FAST_BURN, SLOW_BURN = 14.4, 6.0
QUEUE_FACTOR = 2
"""Queue alert: requests waiting per replica above this many times the autoscaling target (`target_queue_depth`)."""
GPU_IDLE_PERCENT = 5
VLLM_HANDLERS = "/v1/(chat/completions|completions|embeddings)"


def num(x: float) -> str:
    """A PromQL number literal without float noise (0.072, not 0.07200000000000001)."""
    v = round(float(x), 12)
    return str(int(v)) if v.is_integer() else repr(v)


@dataclass(frozen=True)
class Target:
    """One pipeline on one site, with the names its engine's metrics carry."""

    pipeline: Pipeline
    site: str
    namespace: str
    replicas: int
    workloads: dict[str, str]   # A/B variant ("" without variants) -> workload name (Service / InferenceService)

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def engine(self) -> str:
        return self.pipeline.engine.kind

    @property
    def labels(self) -> dict[str, str]:
        return {"pipeline": self.name, "site": self.site, "engine": self.engine, "tier": self.pipeline.privacy_tier.value}

    @property
    def match(self) -> str:
        """Matchers of this target's recorded series."""
        return f'pipeline="{self.name}",site="{self.site}"'


def target(site: str, env: Environment, p: Pipeline, replicas: int, namespace: str) -> Target:
    variants = planning.variant_replicas(p, replicas)
    if p.engine.kind == "triton":
        names = {v: triton.isvc_name(p, v) for v in variants}
    else:
        names = {v: meta.k8s_name(p.name, v) for v in variants}
    return Target(p, site, namespace, replicas, names)


def _alt(names: list[str]) -> str:
    return "|".join(sorted(names))


def triton_pods(isvcs: list[str]) -> str:
    """Pod-name regex of InferenceServices' predictor pods (KServe Standard mode: Deployment `<isvc>-predictor`)."""
    return "(" + _alt([triton.predictor_name(n) for n in isvcs]) + ")-.+"


def request_counters(t: Target, variants: list[str] | None = None) -> tuple[tuple[str, ...], str]:
    """(selectors whose counters add up to all requests, the server errors' selector) of the target's workloads (or of
    some variants). Triton counts successes and failures in two counters (a failure counter appears with its first
    failure), so its requests are the sum of both."""
    names = [t.workloads[v] for v in (t.workloads if variants is None else variants)]
    ns = t.namespace
    if t.engine == "vllm":
        base = f'http_requests_total{{namespace="{ns}",service=~"{_alt(names)}",handler=~"{VLLM_HANDLERS}"'
        return (base + "}",), base + ',status="5xx"}'
    if t.engine == "triton":
        pods = f'namespace="{ns}",pod=~"{triton_pods(names)}"'
        failures = f"nv_inference_request_failure{{{pods}}}"
        return (f"nv_inference_request_success{{{pods}}}", failures), failures
    base = f'http_server_request_duration_seconds_count{{namespace="{ns}",service=~"{_alt(names)}"'
    return (base + "}",), base + ',http_response_status_code=~"5.."}'


def request_sums(t: Target, fn: str, window: str, variants: list[str] | None = None) -> tuple[str, str]:
    """(all requests, server errors) as `sum(fn(...[window]))` expressions (fn: rate or increase). All requests are
    absent only when the first counter is (nothing scraped); the server errors when no error was ever counted."""
    total, errors = request_counters(t, variants)
    first, *more = (f"sum({fn}({s}[{window}]))" for s in total)
    return " + ".join([first] + [f"({m} or vector(0))" for m in more]), f"sum({fn}({errors}[{window}]))"


def error_ratio(t: Target, window: str, variants: list[str] | None = None) -> str:
    total, errors = request_sums(t, "rate", window, variants)
    return f"({errors} or vector(0)) / ({total})"


def latency_p99(t: Target) -> str:
    """p99 server-side latency in seconds, from the engine's own histogram."""
    names = _alt(list(t.workloads.values()))
    if t.engine == "vllm":
        return (f'histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{{'
                f'namespace="{t.namespace}",service=~"{names}"}}[5m])))')
    if t.engine == "triton":
        pods = triton_pods(list(t.workloads.values()))
        return f'max(nv_inference_request_summary_us{{namespace="{t.namespace}",pod=~"{pods}",quantile="0.99"}}) / 1e6'
    return (f'histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{{'
            f'namespace="{t.namespace}",service=~"{names}"}}[5m])))')


def gpu_pods(t: Target) -> str:
    """Regex of the names of the pods holding the target's GPUs: Deployment pods `<name>-<rs>-<id>` and
    LeaderWorkerSet pods `<name>-<group>[-<worker>]` for vLLM, KServe predictor pods for Triton."""
    alts = []
    for n in sorted(t.workloads.values()):
        if t.engine == "triton":
            alts.append(f"{n}-predictor-.+")
        else:
            alts += [f"{n}-[a-z0-9]+-[a-z0-9]+", f"{n}-[0-9]+(-[0-9]+)?"]
    return "|".join(alts)


def _record(name: str, expr: str, t: Target) -> dict:
    return {"record": name, "expr": expr, "labels": dict(t.labels)}


def _alert(name: str, expr: str, for_: str, severity: str, t: Target, summary: str, description: str) -> dict:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity, **t.labels},
            "annotations": {"summary": summary, "description": description}}


def rules(t: Target) -> list[dict]:
    """Recording and alerting rules of one pipeline on one site (one rule group)."""
    p, m = t.pipeline, t.match
    budget = 1 - p.availability
    out = [_record(PLANNED_REPLICAS, f"vector({t.replicas})", t),
           _record(LATENCY_OBJECTIVE, f"vector({num(p.latency.service_ms / 1000)})", t),
           _record(ERROR_BUDGET, f"vector({num(budget)})", t)]
    total, errors = request_sums(t, "rate", "5m")
    out.append(_record(REQUESTS, total, t))
    out.append(_record(ERRORS, f"{errors} or (({total}) * 0)", t))
    out += [_record(ERROR_RATIO.format(window=w), error_ratio(t, w), t) for w in BURN_WINDOWS]
    out.append(_record(LATENCY_P99, latency_p99(t), t))
    if t.engine == "vllm":
        sel = f'namespace="{t.namespace}",service=~"{_alt(list(t.workloads.values()))}"'
        target_depth = planning.scaling(p, t.replicas).queue_threshold
        out.append(_record(QUEUE_WAITING, f"avg(vllm:num_requests_waiting{{{sel}}})", t))
        out.append(_record(QUEUE_OBJECTIVE, f"vector({QUEUE_FACTOR * target_depth})", t))
        out.append(_record(TOKENS, f"sum(rate(vllm:generation_tokens_total{{{sel}}}[5m]))", t))
    if p.gpu:
        out.append(_record(GPU_UTIL, f'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{namespace="{t.namespace}",'
                                     f'pod=~"{gpu_pods(t)}"}}[5m]))', t))

    where = f"{t.name} on {t.site}"
    out.append(_alert(
        "PipelineLatencyAboveSLO", f"{LATENCY_P99}{{{m}}} > {num(p.latency.service_ms / 1000)}", "10m", "page", t,
        f"{where}: p99 service time above {p.latency.service_ms:g} ms",
        f"The pipeline's p99 SLO is {p.latency.p99_ms:g} ms end to end, of which {p.latency.service_ms:g} ms service "
        f"time; the rest is the network budget the placement used. Check queueing, replicas and GPU saturation."))
    fast, slow = num(FAST_BURN * budget), num(SLOW_BURN * budget)
    ratio = ERROR_RATIO.format
    out.append(_alert(
        "PipelineErrorBudgetFastBurn",
        f"{ratio(window='1h')}{{{m}}} > {fast} and {ratio(window='5m')}{{{m}}} > {fast}", "2m", "page", t,
        f"{where}: server errors burn the 30-day error budget {FAST_BURN:g}x too fast",
        f"More than {float(fast):.2%} of requests failed over the last hour and 5 minutes (availability objective "
        f"{p.availability:.2%}): at this rate the month's budget is gone in about two days."))
    out.append(_alert(
        "PipelineErrorBudgetSlowBurn",
        f"{ratio(window='6h')}{{{m}}} > {slow} and {ratio(window='30m')}{{{m}}} > {slow}", "15m", "ticket", t,
        f"{where}: server errors burn the 30-day error budget {SLOW_BURN:g}x too fast",
        f"More than {float(slow):.2%} of requests failed over the last 6 hours and 30 minutes (availability "
        f"objective {p.availability:.2%}): at this rate the month's budget is gone in five days."))
    if t.engine == "vllm":
        depth = QUEUE_FACTOR * planning.scaling(p, t.replicas).queue_threshold
        out.append(_alert(
            "PipelineQueueBacklog", f"{QUEUE_WAITING}{{{m}}} > {depth}", "15m", "page", t,
            f"{where}: more than {depth} requests waiting per replica",
            f"KEDA adds replicas at {depth // QUEUE_FACTOR} waiting requests per replica; a queue twice as deep for "
            f"15 minutes means scaling is capped (max replicas, or no GPU capacity left on the site)."))
        running = f'sum(vllm:num_requests_running{{namespace="{t.namespace}",service=~"{_alt(list(t.workloads.values()))}"}})'
        out.append(_alert(
            "PipelineTokenGenerationStalled", f"{TOKENS}{{{m}}} == 0 and on () {running} > 0", "10m", "page", t,
            f"{where}: requests are running but no tokens are generated",
            "vLLM reports running requests and has produced no token for 10 minutes: the engine is hung "
            "(NCCL, a dead worker of a multi-node replica). Restart the replica."))
    if p.gpu:
        out.append(_alert(
            "PipelineGpusIdle",
            f'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{namespace="{t.namespace}",pod=~"{gpu_pods(t)}"}}[1h])) '
            f"< {GPU_IDLE_PERCENT}", "5h", "ticket", t,
            f"{where}: the pipeline's GPUs have been idle for 6 hours",
            f"GPU utilisation averaged below {GPU_IDLE_PERCENT} % for 6 hours: the placement reserves these GPUs "
            f"for the spec's demand_rps and min_replicas. Lower them, or allow scale to zero."))
    return out
