"""The KEDA stand-in of the local control planes: the HPA it builds from the ScaledObjects the program
renders, and that it applies each ScaledObject generation once. (The cluster's HPA controller acting on
it is tested end to end in tests/e2e/test_local_controlplane.py.)"""
from __future__ import annotations

import copy

import pytest

from hybridml.local.keda_sim import APPLIED_ANNOTATION, Reconciler, hpa_for
from hybridml.local.kubeapi import KubeAPIError
from infra.loader import load_environment
from infra.spec import Environment
from tests.conftest import SMALL_SPEC
from workloads.render import vllm
from workloads.render.context import SiteContext

CTX = SiteContext(env_name="local", site="aws-use1", site_kind="cloud", domain="local.example")


def _rendered_scaled_object(replicas: int = 3, tensor_parallel: int | None = None) -> dict:
    if tensor_parallel:
        spec = copy.deepcopy(SMALL_SPEC)
        spec["pipelines"][0]["engine"] = {"kind": "vllm", "tensor_parallel": 8, "pipeline_parallel": 2,
                                          "max_model_len": 32768}
        spec["pipelines"][0]["resources"]["gpu"]["count"] = 16
        env = Environment.model_validate(spec)
        p = env.pipelines[0]
    else:
        env = load_environment("local")
        p = env.pipeline("chat-small")
    so = next(o for o in vllm.objects(CTX, env, p, replicas, "ml-internal") if o["kind"] == "ScaledObject")
    so["metadata"] |= {"uid": "uid-1", "generation": 1}
    return so


def test_the_hpa_holds_the_plans_floor_and_ceiling_for_the_scaled_workload():
    so = _rendered_scaled_object(replicas=3)
    hpa = hpa_for(so)
    assert hpa["metadata"]["name"] == f"keda-hpa-{so['metadata']['name']}"
    assert hpa["metadata"]["namespace"] == "ml-internal"
    assert hpa["spec"]["scaleTargetRef"] == so["spec"]["scaleTargetRef"] | {"apiVersion": "apps/v1"}
    floor = so["spec"]["minReplicaCount"]   # this variant's share of the 3 replicas
    assert hpa["spec"]["minReplicas"] == floor >= 1
    assert hpa["spec"]["maxReplicas"] == so["spec"]["maxReplicaCount"] >= floor
    assert hpa["spec"]["behavior"] == so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == ["s0-prometheus"]
    owner = hpa["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ScaledObject", "uid-1", True)
    assert hpa["metadata"]["annotations"][APPLIED_ANNOTATION] == "uid-1/1"


def test_a_multi_node_replica_scales_its_leaderworkerset():
    hpa = hpa_for(_rendered_scaled_object(replicas=2, tensor_parallel=16))
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"
    assert hpa["spec"]["minReplicas"] == 2


def test_scale_to_zero_keeps_one_replica_as_kedas_hpa_does():
    so = _rendered_scaled_object()
    so["spec"]["minReplicaCount"] = 0
    assert hpa_for(so)["spec"]["minReplicas"] == 1
    del so["spec"]["maxReplicaCount"]
    assert hpa_for(so)["spec"]["maxReplicas"] == 100


class FakeAPI:
    """The four calls the reconciler makes, against an in-memory set of ScaledObjects and HPAs."""

    def __init__(self, scaled_objects: list[dict], crd: bool = True):
        self.objects = {o["metadata"]["name"]: o for o in scaled_objects}
        self.hpas: dict[str, dict] = {}
        self.applies: list[str] = []
        self.crd = crd

    def list_metadata(self, path, params=None):
        if "scaledobjects" in path:
            if not self.crd:
                raise KubeAPIError("GET", path, 404, "not found")
            return [{"metadata": o["metadata"]} for o in self.objects.values()]
        return [{"metadata": h["metadata"]} for h in self.hpas.values()]

    def get_or_none(self, path):
        return copy.deepcopy(self.objects.get(path.rsplit("/", 1)[1]))

    def apply(self, path, obj, field_manager, force=True):
        assert field_manager == "keda-operator" and force
        self.applies.append(obj["metadata"]["name"])
        self.hpas[obj["metadata"]["name"]] = obj


def test_each_generation_is_applied_once_and_a_restart_reads_what_was_applied():
    a, b = _rendered_scaled_object(), _rendered_scaled_object()
    b["metadata"] |= {"name": "other", "uid": "uid-2"}
    api = FakeAPI([a, b])
    logged = []
    rec = Reconciler(api, log=logged.append)
    assert rec.once() == 2 and sorted(api.applies) == [f"keda-hpa-{a['metadata']['name']}", "keda-hpa-other"]
    assert rec.once() == 0
    floor = a["spec"]["minReplicaCount"]
    assert any(f"kept within [{floor}, " in line for line in logged)

    api.objects["other"]["metadata"]["generation"] = 2   # the plan raised the floor
    api.objects["other"]["spec"]["minReplicaCount"] = floor + 1
    assert rec.once() == 1 and api.hpas["keda-hpa-other"]["spec"]["minReplicas"] == floor + 1

    assert Reconciler(api, log=logged.append).once() == 0   # a restarted stand-in re-applies nothing
    del api.objects["other"]
    assert rec.once() == 0 and set(rec.applied) == {"uid-1"}


def test_without_kedas_crd_the_pass_fails_with_404():
    with pytest.raises(KubeAPIError) as e:
        Reconciler(FakeAPI([], crd=False), log=print).once()
    assert e.value.status == 404


def test_the_loop_outlives_a_busy_or_restarting_apiserver(monkeypatch):
    import http.client

    from hybridml.local import keda_sim

    class Flaky(FakeAPI):
        failures = [http.client.RemoteDisconnected("closed"), KubeAPIError("GET", "/x", 500, "etcd timeout"),
                    http.client.BadStatusLine("")]

        def list_metadata(self, path, params=None):
            if self.failures:
                raise self.failures.pop(0)
            return super().list_metadata(path, params)

        def close(self):
            pass

    api, logged, rounds = Flaky([_rendered_scaled_object()]), [], []

    def sleep(_seconds):
        rounds.append(1)
        if len(rounds) == 5:
            raise SystemExit

    monkeypatch.setattr(keda_sim.time, "sleep", sleep)
    with pytest.raises(SystemExit):
        keda_sim.run(api, poll=0, log=logged.append)
    assert sum(line.startswith("error:") for line in logged) == 3
    assert len(api.applies) == 1          # applied once it could read, not again in the last round
