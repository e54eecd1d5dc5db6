"""Grafana dashboards of the serving stack, as provisioned-dashboard ConfigMaps (label `grafana_dashboard: "1"`,
what the Grafana dashboard sidecar of kube-prometheus-stack loads). Pure.

Two dashboards per environment, the same on every site (its own Prometheus, or a fleet-wide query layer chosen
with the `datasource` variable):
- fleet overview: requests, errors, latency against objective, queues, tokens/s, GPU utilisation and quality by
  site and privacy tier, then one row per site of the plan;
- one *templated* pipeline dashboard with a `pipeline` variable (the plan's pipelines) instead of one file per
  pipeline: at 250 pipelines that would be 250 near-identical ConfigMaps per site, regenerated and re-provisioned
  on every catalog change, with 250 entries to search in Grafana. Every panel reads the per-pipeline series the
  rules record (`slo.py`, `quality.py`), labelled alike whatever the engine, so one template fits every
  pipeline, and objectives show as their recorded thresholds.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

from infra.spec import Environment
from workloads import planning
from workloads.render import meta, quality, slo
from workloads.render.context import SiteContext

DASHBOARD_LABEL = "grafana_dashboard"
FOLDER_ANNOTATION = "grafana_folder"
FOLDER = "hybridml"
DS = {"type": "prometheus", "uid": "${datasource}"}


def _target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def _panel(pid: int, title: str, grid: tuple[int, int, int, int], exprs: list[tuple[str, str]], *,
           kind: str = "timeseries", unit: str = "short", description: str = "") -> dict:
    x, y, w, h = grid
    out: dict = {"id": pid, "type": kind, "title": title, "datasource": DS,
                 "gridPos": {"x": x, "y": y, "w": w, "h": h},
                 "targets": [_target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(exprs)],
                 "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}}
    if description:
        out["description"] = description
    if kind == "table":
        for t in out["targets"]:
            t.update({"instant": True, "range": False, "format": "table"})
    return out


def _row(pid: int, title: str, y: int) -> dict:
    return {"id": pid, "type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}}


def _custom(name: str, label: str, values: list[str], *, multi: bool) -> dict:
    return {"name": name, "label": label, "type": "custom", "query": ",".join(values), "multi": multi,
            "includeAll": multi, "allValue": ".*" if multi else None, "hide": 0,
            "current": {"text": "All", "value": "$__all"} if multi else ({"text": values[0], "value": values[0]} if values else {}),
            "options": []}


def _datasource() -> dict:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "hide": 0,
            "current": {}, "refresh": 1}


def _dashboard(uid: str, title: str, env: Environment, variables: list[dict], panels: list[dict]) -> dict:
    return {"uid": uid, "title": title, "tags": ["hybridml", env.name], "editable": False, "schemaVersion": 39,
            "timezone": "utc", "time": {"from": "now-6h", "to": "now"}, "refresh": "1m", "graphTooltip": 1,
            "templating": {"list": variables}, "annotations": {"list": []}, "panels": panels}


def uid(env: Environment, which: str) -> str:
    return meta.k8s_name("hybridml", env.name, which, limit=40)


def fleet(env: Environment, plan_sites: Mapping[str, Mapping[str, int]]) -> dict:
    """The fleet overview. `plan_sites`: every site the plan uses -> {pipeline: replicas there}."""
    f = 'site=~"$site",tier=~"$tier"'
    panels = [_row(1, "Fleet", 0)]
    stats = [
        ("Pipelines placed", f"count({slo.PLANNED_REPLICAS}{{{f}}})", "short"),
        ("Replicas planned", f"sum({slo.PLANNED_REPLICAS}{{{f}}})", "short"),
        ("Requests/s", f"sum({slo.REQUESTS}{{{f}}})", "reqps"),
        ("Error ratio (5m)", f"sum({slo.ERRORS}{{{f}}}) / sum({slo.REQUESTS}{{{f}}})", "percentunit"),
        ("Tokens/s (vLLM)", f"sum({slo.TOKENS}{{{f}}})", "short"),
        ("Alerts firing", f'count(ALERTS{{alertstate="firing",alertname=~"Pipeline.+",{f}}}) or vector(0)', "short"),
    ]
    for i, (title, expr, unit) in enumerate(stats):
        panels.append(_panel(2 + i, title, (4 * i, 1, 4, 4), [(expr, title)], kind="stat", unit=unit))
    by = [
        ("Requests/s", "sum by ({k}) ({REQ}{{{f}}})", "reqps"),
        ("Error ratio (5m)", "sum by ({k}) ({ERR}{{{f}}}) / sum by ({k}) ({REQ}{{{f}}})", "percentunit"),
        ("Pipelines above their p99 objective", "count by ({k}) ({P99}{{{f}}} > {OBJ}{{{f}}})", "short"),
        ("vLLM requests waiting per replica", "avg by ({k}) ({QUEUE}{{{f}}})", "short"),
        ("Generated tokens/s (vLLM)", "sum by ({k}) ({TOK}{{{f}}})", "short"),
        ("GPU utilisation", "avg by ({k}) ({GPU}{{{f}}})", "percent"),
        ("Quality objectives breached",
         "count by ({k}) ({VAL}{{{f}}} > on (pipeline, site, objective, metric) group_left {THR}{{{f}}})", "short"),
    ]
    names = {"REQ": slo.REQUESTS, "ERR": slo.ERRORS, "P99": slo.LATENCY_P99, "OBJ": slo.LATENCY_OBJECTIVE,
             "QUEUE": slo.QUEUE_WAITING, "TOK": slo.TOKENS, "GPU": slo.GPU_UTIL, "VAL": quality.VALUE,
             "THR": quality.THRESHOLD, "f": f}
    pid, y = 20, 5
    for title, template, unit in by:
        for col, key in enumerate(("site", "tier")):
            expr = template.format(k=key, **names)
            panels.append(_panel(pid, f"{title} by {key}", (12 * col, y, 12, 7), [(expr, f"{{{{{key}}}}}")], unit=unit))
            pid += 1
        y += 7
    burn = (f"topk(10, {slo.ERROR_RATIO.format(window='1h')}{{{f}}} / {slo.ERROR_BUDGET}{{{f}}})")
    panels.append(_panel(pid, "Fastest error-budget burn (1h, x budget)", (0, y, 24, 8), [(burn, "")], kind="table",
                         description="Burn rate = error ratio over the last hour / the pipeline's error budget "
                                     "(1 - availability); 14.4 pages."))
    pid, y = pid + 1, y + 8
    for site in sorted(plan_sites):
        work = plan_sites[site]
        tiers = sorted({env.pipeline(p).privacy_tier.value for p in work})
        gpus = any(env.pipeline(p).gpu for p in work)
        panels.append(_row(pid, f"{site} ({planning.site_kind(env, site)}): {len(work)} pipelines, "
                                f"{sum(work.values())} replicas planned; tiers {', '.join(tiers)}", y))
        s = f'site="{site}"'
        cells = [("Requests/s by tier", f"sum by (tier) ({slo.REQUESTS}{{{s}}})", "reqps"),
                 ("Error ratio by tier", f"sum by (tier) ({slo.ERRORS}{{{s}}}) / sum by (tier) ({slo.REQUESTS}{{{s}}})",
                  "percentunit"),
                 ("p99 / objective, worst 5 pipelines",
                  f"topk(5, {slo.LATENCY_P99}{{{s}}} / {slo.LATENCY_OBJECTIVE}{{{s}}})", "percentunit")]
        if gpus:
            cells.append(("GPU utilisation by pipeline, lowest 5", f"bottomk(5, {slo.GPU_UTIL}{{{s}}})", "percent"))
        width = 24 // len(cells)
        legends = {"Requests/s by tier": "{{tier}}", "Error ratio by tier": "{{tier}}"}
        for i, (title, expr, unit) in enumerate(cells):
            panels.append(_panel(pid + 1 + i, title, (width * i, y + 1, width, 7), [(expr, legends.get(title, "{{pipeline}}"))],
                                 unit=unit))
        pid, y = pid + 1 + len(cells), y + 8
    tiers = sorted({env.pipeline(p).privacy_tier.value for work in plan_sites.values() for p in work})
    variables = [_datasource(), _custom("site", "Site", sorted(plan_sites), multi=True),
                 _custom("tier", "Privacy tier", tiers, multi=True)]
    return _dashboard(uid(env, "fleet"), f"hybridml {env.name}: fleet overview", env, variables, panels)


def pipeline(env: Environment, plan_sites: Mapping[str, Mapping[str, int]]) -> dict:
    """The templated per-pipeline dashboard (`pipeline` variable: every pipeline the plan places)."""
    f = 'pipeline="$pipeline",site=~"$site"'
    ratio = slo.ERROR_RATIO.format
    cells = [
        ("p99 latency against objective", [(f"{slo.LATENCY_P99}{{{f}}}", "p99 {{site}}"),
                                           (f"{slo.LATENCY_OBJECTIVE}{{{f}}}", "objective {{site}}")], "s"),
        ("Requests/s", [(f"{slo.REQUESTS}{{{f}}}", "{{site}}")], "reqps"),
        ("Error ratio", [(f"{ratio(window='5m')}{{{f}}}", "5m {{site}}"), (f"{ratio(window='1h')}{{{f}}}", "1h {{site}}"),
                         (f"{slo.ERROR_BUDGET}{{{f}}}", "budget {{site}}")], "percentunit"),
        ("Error-budget burn rate", [(f"{ratio(window='1h')}{{{f}}} / {slo.ERROR_BUDGET}{{{f}}}", "1h {{site}}"),
                                    (f"{ratio(window='6h')}{{{f}}} / {slo.ERROR_BUDGET}{{{f}}}", "6h {{site}}")], "short"),
        ("Requests waiting per replica (vLLM)", [(f"{slo.QUEUE_WAITING}{{{f}}}", "{{site}}"),
                                                 (f"{slo.QUEUE_OBJECTIVE}{{{f}}}", "alert above {{site}}")], "short"),
        ("Generated tokens/s (vLLM)", [(f"{slo.TOKENS}{{{f}}}", "{{site}}")], "short"),
        ("GPU utilisation", [(f"{slo.GPU_UTIL}{{{f}}}", "{{site}}")], "percent"),
        ("Replicas planned", [(f"{slo.PLANNED_REPLICAS}{{{f}}}", "{{site}}")], "short"),
        ("Quality objectives: value", [(f"{quality.VALUE}{{{f}}}", "{{objective}} {{metric}} {{variant}} {{site}}")], "short"),
        ("Quality objectives: limit", [(f"{quality.THRESHOLD}{{{f}}}", "{{objective}} {{metric}} {{site}}")], "short"),
    ]
    panels = []
    for i, (title, exprs, unit) in enumerate(cells):
        panels.append(_panel(i + 1, title, (12 * (i % 2), 8 * (i // 2), 12, 8), exprs, unit=unit))
    y = 8 * ((len(cells) + 1) // 2)
    panels.append(_panel(len(cells) + 1, "Firing alerts", (0, y, 24, 6),
                         [(f'ALERTS{{alertstate="firing",{f}}}', "")], kind="table"))
    names = sorted({p for work in plan_sites.values() for p in work})
    site_var = {"name": "site", "label": "Site", "type": "query", "datasource": DS, "refresh": 2, "multi": True,
                "includeAll": True, "allValue": ".*", "hide": 0, "current": {"text": "All", "value": "$__all"},
                "query": {"query": f'label_values({slo.PLANNED_REPLICAS}{{pipeline="$pipeline"}}, site)', "refId": "site"},
                "definition": f'label_values({slo.PLANNED_REPLICAS}{{pipeline="$pipeline"}}, site)'}
    variables = [_datasource(), _custom("pipeline", "Pipeline", names, multi=False), site_var]
    return _dashboard(uid(env, "pipeline"), f"hybridml {env.name}: pipeline", env, variables, panels)


def queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of a dashboard's panels (for checks)."""
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def objects(ctx: SiteContext, env: Environment, plan_sites: Mapping[str, Mapping[str, int]]) -> list[dict]:
    out = []
    for which, board in (("fleet", fleet(env, plan_sites)), ("pipeline", pipeline(env, plan_sites))):
        name = f"hybridml-dashboard-{which}"
        lbls = {**meta.labels("grafana", "dashboard", instance=name, site=ctx.site), DASHBOARD_LABEL: "1"}
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": meta.metadata(name, ctx.monitoring_namespace, lbls, {FOLDER_ANNOTATION: FOLDER}),
                    "data": {f"hybridml-{which}.json": json.dumps(board, sort_keys=True, separators=(",", ":"))}})
    return out
