"""What the observability component renders for the operational SLOs, the quality objectives and the dashboards
(the PromQL itself is checked with promtool in test_promtool.py)."""
from __future__ import annotations

import copy
import json

import pytest

from infra.errors import InvalidValue
from infra.labels import MONITORING_NAMESPACE, PIPELINE, namespace_for
from infra.loader import load_environment
from infra.spec import Environment
from tests.workloads.conftest import rendered
from workloads.render import dashboards, quality, slo
from workloads.render.context import SiteContext
from workloads.render.observability import pipeline_rules

STACKS = ["local", "dev"]


@pytest.fixture(params=STACKS)
def stack(request):
    return rendered(request.param)


def test_one_rule_object_per_placed_pipeline_and_site(stack):
    placed = {(site, name) for site, s in stack.summary["sites"].items() for name in s["pipelines"]}
    rules = {}
    for o in stack.k8s("PrometheusRule"):
        name = o.manifest["metadata"]["labels"].get(PIPELINE)
        if name:
            assert (o.site, name) not in rules, f"two rule objects for {name} on {o.site}"
            rules[(o.site, name)] = o
    assert set(rules) == placed
    for (site, name), o in rules.items():
        p = stack.env.pipeline(name)
        assert o.namespace == namespace_for(p.privacy_tier)
        groups = [g["name"] for g in o.manifest["spec"]["groups"]]
        assert groups == [f"pipeline-{name}"] + ([f"pipeline-quality-{name}"] if p.quality else [])
        for g in o.manifest["spec"]["groups"]:
            for r in g["rules"]:
                assert r["labels"]["pipeline"] == name and r["labels"]["site"] == site


def test_rules_follow_the_engine_and_the_spec(stack):
    for o in stack.k8s("PrometheusRule"):
        name = o.manifest["metadata"]["labels"].get(PIPELINE)
        if not name:
            continue
        p = stack.env.pipeline(name)
        rules = [r for g in o.manifest["spec"]["groups"] for r in g["rules"]]
        alerts = {r["alert"] for r in rules if "alert" in r}
        records = {r["record"]: r["expr"] for r in rules if "record" in r}
        assert {"PipelineLatencyAboveSLO", "PipelineErrorBudgetFastBurn", "PipelineErrorBudgetSlowBurn"} <= alerts
        assert ("PipelineQueueBacklog" in alerts) == ("PipelineTokenGenerationStalled" in alerts) == (p.engine.kind == "vllm")
        assert ("PipelineGpusIdle" in alerts) == (p.gpu is not None)
        assert records[slo.LATENCY_OBJECTIVE] == f"vector({slo.num(p.latency.service_ms / 1000)})"
        assert records[slo.ERROR_BUDGET] == f"vector({slo.num(1 - p.availability)})"
        assert records[slo.PLANNED_REPLICAS] == f"vector({stack.summary['sites'][o.site]['pipelines'][name]['replicas']})"
        kinds = {r["labels"]["objective"] for r in rules if r.get("alert", "").startswith("Pipeline") and "objective" in r["labels"]}
        assert kinds == {q.kind for q in p.quality}
        if p.quality:
            assert records[quality.THRESHOLD]


def test_dashboards_are_provisioned_configmaps_generated_from_the_plan(stack):
    plan_sites = sorted(stack.summary["sites"])
    placed = sorted({n for s in stack.summary["sites"].values() for n in s["pipelines"]})
    for site in plan_sites:
        maps = [o for o in stack.k8s("ConfigMap", site) if o.manifest["metadata"]["labels"].get("grafana_dashboard") == "1"]
        assert sorted(o.obj_name for o in maps) == ["hybridml-dashboard-fleet", "hybridml-dashboard-pipeline"]
        for o in maps:
            assert o.namespace == MONITORING_NAMESPACE
            assert o.manifest["metadata"]["annotations"][dashboards.FOLDER_ANNOTATION] == dashboards.FOLDER
            (board,) = [json.loads(v) for v in o.manifest["data"].values()]
            variables = {v["name"]: v for v in board["templating"]["list"]}
            assert variables["datasource"]["type"] == "datasource"
            if o.obj_name.endswith("pipeline"):
                assert variables["pipeline"]["query"].split(",") == placed
                assert all('pipeline="$pipeline"' in q for q in dashboards.queries(board))
            else:
                assert variables["site"]["query"].split(",") == plan_sites
                rows = [p["title"].split(" ")[0] for p in board["panels"] if p["type"] == "row"][1:]
                assert rows == plan_sites
            ids = [p["id"] for p in board["panels"]]
            assert len(ids) == len(set(ids))


def test_dcgm_scrape_keeps_the_gpu_pods_labels(stack):
    monitors = [o for o in stack.k8s("ServiceMonitor") if o.obj_name == "dcgm-exporter"]
    assert monitors
    assert all(e["honorLabels"] is True for o in monitors for e in o.manifest["spec"]["endpoints"])


def test_a_shadow_disagreement_objective_never_becomes_a_rule():
    """Validation refuses the kind (no producer); a spec that skips validation cannot render it either."""
    env = load_environment("local")
    spec = json.loads(env.model_dump_json())
    spec["pipelines"][2]["quality"] = [{"kind": "shadow_disagreement", "max": 0.05, "window": "1h"}]
    bypassed = Environment.model_validate(copy.deepcopy(spec))
    ctx = SiteContext(env_name="local", site="aws-use1", site_kind="cloud", domain="local.example")
    with pytest.raises(InvalidValue, match="shadow_disagreement has no producer"):
        pipeline_rules(ctx, bypassed, bypassed.pipelines[2].name, 1)
