"""Capacity rows as typed keys: names, labels and which pipelines a limit concerns."""
from __future__ import annotations

from infra.loader import parse_environment
from infra.spec import PrivacyTier
from policies.placement.eligibility import eligibility
from policies.placement.rows import CapacityRow, RowKind
from policies.placement.solver import build
from tests.conftest import dump


def test_names_labels_and_units_of_every_scope():
    gpu = CapacityRow(RowKind.GPU, "aws-use1", gpu_type="H100")
    subset = CapacityRow(RowKind.GPU, "aws-use1", gpu_type="L4", instance_types=("g6.12xlarge", "g6.48xlarge"))
    pool = CapacityRow(RowKind.CPU, "aws-use1", gpu_type="H100")
    cpu_nodes = CapacityRow(RowKind.MEMORY, "aws-use1", cpu_nodes=True)
    zone = CapacityRow(RowKind.CPU, "dc-ash", zone=PrivacyTier.pii)
    zone_gpu = CapacityRow(RowKind.GPU, "dc-ash", gpu_type="L4", zone=PrivacyTier.internal)
    quota = CapacityRow(RowKind.QUOTA, "aws-use1", family="P")
    max_nodes = CapacityRow(RowKind.MAX_NODES, "aws-use1", instance_type="p5.48xlarge")
    assert [str(r) for r in (gpu, subset, pool, cpu_nodes, zone, zone_gpu, quota, max_nodes)] == [
        "gpu|aws-use1|H100", "gpu|aws-use1|L4@g6.12xlarge+g6.48xlarge", "cpu|aws-use1|H100-nodes",
        "memory|aws-use1|nodes", "cpu|dc-ash|pii", "gpu|dc-ash|L4|internal", "quota|aws-use1|P",
        "max_nodes|aws-use1|p5.48xlarge"]
    assert subset.label == "L4 GPUs on g6.12xlarge, g6.48xlarge"
    assert zone.label == "CPU cores (zone pii)" and zone_gpu.label == "L4 GPUs (zone internal)"
    assert cpu_nodes.label == "memory of CPU nodes" and pool.label == "cpu of H100 nodes"
    assert quota.shortage_label == "on-demand P vCPU quota" and quota.unit == "vCPUs"
    assert zone_gpu.shortage_label == "L4 GPU capacity in racks of privacy zone internal"
    assert pool.ties_nodes_only and cpu_nodes.ties_nodes_only and gpu.ties_nodes_only
    assert not (zone.ties_nodes_only or quota.ties_nodes_only or max_nodes.ties_nodes_only)
    # reported in name order, whatever order they were made in
    assert sorted([quota, gpu, zone]) == [zone, gpu, quota]
    assert len({gpu, CapacityRow(RowKind.GPU, "aws-use1", gpu_type="H100")}) == 1


def test_rows_the_solver_builds_concern_the_right_pipelines(small_spec):
    env = parse_environment(dump(small_spec))
    _, v = build(env, eligibility(env))
    rows = list(v.capacity_rows)
    assert rows and all(isinstance(r, CapacityRow) for r in rows)
    chat, recs = env.pipeline("chat"), env.pipeline("recs")   # chat: H100 vLLM in the cloud; recs: pii CPU service
    # cloud GPU pods count against the slots of the instance types they fit (whole pods on whole nodes)
    gpu_rows = [r for r in rows if r.kind is RowKind.SLOTS and r.gpu_type is not None and r.zone is None]
    assert [str(r) for r in gpu_rows] == ["slots|aws-use1|p5.48xlarge|H100"]
    assert all(r.concerns(env, chat) and not r.concerns(env, recs) for r in gpu_rows)
    assert gpu_rows[0].ties_nodes_only and gpu_rows[0].label == "p5.48xlarge nodes"
    host_rows = [r for r in rows if r.kind is RowKind.SLOTS and r.zone is not None]
    assert host_rows and all(r.cpu_nodes and not r.ties_nodes_only for r in host_rows)
    ash_pii = next(r for r in host_rows if r.site == "dc-ash" and r.zone is PrivacyTier.pii)
    assert str(ash_pii) == "slots|dc-ash|pii/32c-128GiB|cpu"
    assert ash_pii.label == "32c-128GiB hosts for non-GPU pods (zone pii)" and ash_pii.unit == "nodes"
    assert ash_pii.concerns(env, recs) and not ash_pii.concerns(env, chat)
    # dc-ash has an internal and a pii rack: its pii zone is only for pii work; dc-ams has pii racks only,
    # so everything there runs in (and is limited by) the pii zone
    ash = [r for r in rows if r.site == "dc-ash" and r.zone is PrivacyTier.pii and r.kind is RowKind.CPU]
    ams = [r for r in rows if r.site == "dc-ams" and r.zone is PrivacyTier.pii and r.kind is RowKind.CPU]
    assert ash and all(r.concerns(env, recs) and not r.concerns(env, chat) for r in ash)
    assert ams and all(r.concerns(env, recs) and r.concerns(env, chat) for r in ams)
