"""The one Kubernetes vocabulary (infra/kube.py): taints, quantities, kwok nodes."""
from __future__ import annotations

from decimal import Decimal

import pytest

from infra import labels as L
from infra.kube import (
    Taint,
    cpu_quantity,
    kwok_node,
    memory_quantity_mib,
    parse_quantity,
    parse_taint,
    quantity_or_none,
    quantity_value,
    same_quantity,
)


@pytest.mark.parametrize("text, want", [
    ("nvidia.com/gpu=present:NoSchedule", Taint("nvidia.com/gpu", "present", "NoSchedule")),
    ("hybridml.io/privacy-zone=pii:NoExecute", Taint("hybridml.io/privacy-zone", "pii", "NoExecute")),
    ("dedicated:PreferNoSchedule", Taint("dedicated", "", "PreferNoSchedule")),
    ("dedicated", Taint("dedicated", "", "NoSchedule")),
    ("dedicated=x", Taint("dedicated", "x", "NoSchedule")),
])
def test_taint_text_splits_on_the_last_colon(text: str, want: Taint) -> None:
    assert parse_taint(text) == want
    assert parse_taint(str(want)) == want   # round trip


def test_taint_from_mapping_object_and_itself() -> None:
    t = Taint("k", "v", "NoExecute")
    assert parse_taint({"key": "k", "value": "v", "effect": "NoExecute"}) == t
    assert parse_taint({"key": "k"}) == Taint("k")
    assert parse_taint(t) is t
    assert t.to_k8s() == {"key": "k", "value": "v", "effect": "NoExecute"}
    assert Taint("k").to_k8s() == {"key": "k", "effect": "NoSchedule"}


@pytest.mark.parametrize("a, b", [("63000m", "63"), ("1179648Mi", "1152Gi"), ("1e3", "1k"), ("0.5", "500m"),
                                  (4, "4"), ("1.5Gi", "1536Mi"), (".5", "500m")])
def test_equal_quantities(a: object, b: object) -> None:
    assert parse_quantity(a) == parse_quantity(b)
    assert same_quantity(a, b)


@pytest.mark.parametrize("bad", ["lots", "1.2.3", "5Xi", "", "m", True, None, float("inf"), float("nan"), "--1"])
def test_bad_quantities_raise(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(bad)
    assert quantity_or_none(bad) is None


def test_quantity_values() -> None:
    assert parse_quantity("16Gi") == Decimal(16 * 2 ** 30)
    assert quantity_value("500m") == 0.5
    assert quantity_value(None) == 0.0 and quantity_value("") == 0.0
    assert not same_quantity("1", "2")
    assert same_quantity("abc", "abc") and not same_quantity("abc", "abd")


def test_quantity_formatting_round_trips() -> None:
    for cores in (0.25, 1, 1.5, 64):
        assert float(parse_quantity(cpu_quantity(cores))) == cores
    assert cpu_quantity(4) == "4" and cpu_quantity(1.5) == "1500m"
    assert memory_quantity_mib(16384) == "16Gi" and memory_quantity_mib(1536) == "1536Mi"


def test_kwok_node_has_gpu_capacity_labels_and_taints() -> None:
    node = kwok_node("n1", labels={L.RACK: "r1"}, taints=["nvidia.com/gpu=present:NoSchedule"],
                     capacity={"cpu": "8", "memory": "64Gi"}, gpus=4, gpu_type="L4")
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["metadata"]["labels"][L.KWOK_TYPE] == "kwok"
    assert node["metadata"]["labels"][L.HOSTNAME] == "n1"
    assert node["metadata"]["labels"][L.RACK] == "r1"
    assert node["metadata"]["labels"][L.GPU_PRODUCT] == "NVIDIA-L4"
    assert node["status"]["capacity"][L.GPU_RESOURCE] == "4"
    assert node["status"]["allocatable"][L.GPU_RESOURCE] == "4"
    assert node["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]


def test_kwok_node_allocatable_defaults_to_capacity() -> None:
    node = kwok_node("n2", capacity={"cpu": "2", "memory": "4Gi"})
    assert node["status"]["allocatable"] == node["status"]["capacity"] == {"cpu": "2", "memory": "4Gi"}
    node = kwok_node("n3", capacity={"cpu": "2"}, allocatable={"cpu": "1500m"})
    assert node["status"]["allocatable"] == {"cpu": "1500m"}
