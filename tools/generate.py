"""Deterministic generator for the shipped dev/prod environments and the 10x benchmark fleet.

The shipped YAML files are written by `scripts/gen_environments.py` from this
module, so they can be regenerated and diffed; users edit their own copies.
Figures (see README "Where the numbers come from"): fleet shape after Roblox's
public engineering posts (~250 inference pipelines, 1,000+ GPUs, tens of
thousands of CPU cores, 50 ms P99 feature lookups); prices are AWS on-demand
list prices (approximate, USD/hour); RTTs are typical inter-metro figures.
"""
from __future__ import annotations

import random
from copy import deepcopy

from infra.features import FEATURE_LOOKUP_P99_MS
from tools import feature_shapes

# AWS instance shapes and approximate on-demand prices (us-east-1); other regions apply a multiplier.
INSTANCE_TYPES = {
    "p5.48xlarge": dict(vcpus=192, memory_gib=2048, gpu=dict(type="H100", count=8, memory_gib=80), hourly_usd=55.04),
    "p4de.24xlarge": dict(vcpus=96, memory_gib=1152, gpu=dict(type="A100", count=8, memory_gib=80), hourly_usd=27.45),
    "g6.xlarge": dict(vcpus=4, memory_gib=16, gpu=dict(type="L4", count=1, memory_gib=24), hourly_usd=0.805),
    "g6.12xlarge": dict(vcpus=48, memory_gib=192, gpu=dict(type="L4", count=4, memory_gib=24), hourly_usd=4.602),
    "g6.48xlarge": dict(vcpus=192, memory_gib=768, gpu=dict(type="L4", count=8, memory_gib=24), hourly_usd=13.35),
    "m7i.8xlarge": dict(vcpus=32, memory_gib=128, hourly_usd=1.613),
    "c7i.8xlarge": dict(vcpus=32, memory_gib=64, hourly_usd=1.428),
    "r7i.8xlarge": dict(vcpus=32, memory_gib=256, hourly_usd=2.117),
}

CLOUD_REGIONS = {
    # name: (aws region, jurisdiction, price multiplier, P quota, G quota, standard quota)
    "aws-use1": ("us-east-1", "US", 1.00, 6144, 1536, 20000),
    "aws-usw2": ("us-west-2", "US", 1.00, 4608, 1536, 20000),
    "aws-euw1": ("eu-west-1", "EU", 1.10, 3072, 1152, 16000),
    "aws-apne1": ("ap-northeast-1", "APAC", 1.25, 1536, 768, 12000),
}

# Each region its own VPC range: the data stores admit readers by their site's range, so no two sites may overlap
# (infra/bounds.py); the datacenters' hosts are in 10.100-102.x (`_datacenter`).
VPC_CIDRS = {"aws-use1": "10.10.0.0/16", "aws-usw2": "10.11.0.0/16", "aws-euw1": "10.12.0.0/16", "aws-apne1": "10.13.0.0/16"}

DATACENTERS = {
    # name: (jurisdiction, country, racks, hosts per rack, cores, memory GiB, pii racks, L4 GPU racks)
    "dc-ashburn": ("US", "US", 12, 40, 64, 512, 4, 2),
    "dc-sanjose": ("US", "US", 10, 40, 64, 512, 3, 0),
    "dc-amsterdam": ("EU", "NL", 8, 40, 64, 512, 3, 0),
}

# Datacenters that run an S3-compatible store of their own: the Flink state of their pii streaming views goes there;
# the others keep that state on a PersistentVolumeClaim (workloads/render/flink.py).
OBJECT_STORES = {"dc-ashburn": {"endpoint": "https://s3.ashburn.dc.hybridml.internal", "bucket": "hybridml-flink-state"}}

USER_REGIONS = {"us-east": "US", "us-west": "US", "eu-west": "EU", "ap-east": "APAC"}

# One-way-ish round trips, ms: user region -> site.
USER_RTT = {
    "us-east": {"aws-use1": 8, "aws-usw2": 68, "aws-euw1": 78, "aws-apne1": 165, "dc-ashburn": 6, "dc-sanjose": 64, "dc-amsterdam": 84},
    "us-west": {"aws-use1": 66, "aws-usw2": 10, "aws-euw1": 140, "aws-apne1": 112, "dc-ashburn": 64, "dc-sanjose": 9, "dc-amsterdam": 146},
    "eu-west": {"aws-use1": 76, "aws-usw2": 138, "aws-euw1": 9, "aws-apne1": 225, "dc-ashburn": 80, "dc-sanjose": 145, "dc-amsterdam": 11},
    "ap-east": {"aws-use1": 160, "aws-usw2": 105, "aws-euw1": 220, "aws-apne1": 32, "dc-ashburn": 162, "dc-sanjose": 108, "dc-amsterdam": 230},
}
SITE_RTT = {
    ("aws-use1", "aws-usw2"): 62, ("aws-use1", "aws-euw1"): 70, ("aws-use1", "aws-apne1"): 150,
    ("aws-usw2", "aws-euw1"): 130, ("aws-usw2", "aws-apne1"): 98, ("aws-euw1", "aws-apne1"): 210,
    ("aws-use1", "dc-ashburn"): 2, ("aws-use1", "dc-sanjose"): 62, ("aws-use1", "dc-amsterdam"): 78,
    ("aws-usw2", "dc-ashburn"): 62, ("aws-usw2", "dc-sanjose"): 18, ("aws-usw2", "dc-amsterdam"): 140,
    ("aws-euw1", "dc-ashburn"): 72, ("aws-euw1", "dc-sanjose"): 138, ("aws-euw1", "dc-amsterdam"): 14,
    ("aws-apne1", "dc-ashburn"): 152, ("aws-apne1", "dc-sanjose"): 100, ("aws-apne1", "dc-amsterdam"): 215,
    ("dc-ashburn", "dc-sanjose"): 60, ("dc-ashburn", "dc-amsterdam"): 80, ("dc-sanjose", "dc-amsterdam"): 142,
}

LLMS = [
    # (family, model, gpu type, tp, capacity rps per replica, service ms, p99 ms, speculative draft)
    ("chat-70b", "meta-llama/Llama-3.3-70B-Instruct", "H100", 8, 18, 1800, 2500, "meta-llama/Llama-3.2-1B-Instruct"),
    ("code-32b", "Qwen/Qwen2.5-Coder-32B-Instruct", "H100", 4, 14, 1200, 1800, "[ngram]"),
    ("chat-8b", "meta-llama/Llama-3.1-8B-Instruct", "A100", 1, 10, 900, 1500, None),
    ("assist-14b", "Qwen/Qwen2.5-14B-Instruct", "A100", 2, 9, 1100, 1700, None),
    ("npc-3b", "meta-llama/Llama-3.2-3B-Instruct", "L4", 1, 8, 700, 1200, "[ngram]"),
    ("moderation-llm", "meta-llama/Llama-Guard-3-8B", "L4", 2, 12, 400, 800, None),
]


def _cloud_site(name: str, instance_names: list[str], scale: float) -> dict:
    region, juris, mult, p_quota, g_quota, std_quota = CLOUD_REGIONS[name]
    types = []
    for it in instance_names:
        shape = deepcopy(INSTANCE_TYPES[it])
        shape["hourly_usd"] = round(shape["hourly_usd"] * mult, 3)
        types.append({"name": it, **shape})
    return {
        "kind": "cloud", "name": name, "provider": "aws", "region": region,
        "zones": [f"{region}{z}" for z in "abc"], "jurisdiction": juris, "kubernetes_version": "1.33",
        "vpc_cidr": VPC_CIDRS[name],
        "instance_types": types,
        # Larger synthetic fleets get 20 % quota headroom: accounts that size negotiate limits above need.
        "vcpu_quotas": {k: int(q * scale * (1.2 if scale > 1 else 1)) for k, q in
                        (("P", p_quota), ("G", g_quota), ("standard", std_quota))},
    }


def _datacenter(name: str, index: int, racks_scale: float, max_racks: int | None = None) -> dict:
    juris, country, racks, per_rack, cores, mem, pii_racks, gpu_racks = DATACENTERS[name]
    racks = max(2, round(racks * racks_scale)) if max_racks is None else max_racks
    pii_racks = min(round(pii_racks * racks_scale), racks - 1) if max_racks is None else 1
    gpu_racks = round(gpu_racks * racks_scale) if max_racks is None else 0
    out = []
    for r in range(racks):
        rack_name = f"r{r + 1:02d}"
        pool = {"count": per_rack if max_racks is None else 6, "name_prefix": f"{name.removeprefix('dc-')[:3]}-{rack_name}-h",
                "first_address": f"10.{100 + index}.{r + 1}.11", "cores": cores, "memory_gib": mem}
        if r >= racks - gpu_racks:
            pool["gpu"] = {"type": "L4", "count": 4, "memory_gib": 24}
            pool["count"] = 20
        out.append({"name": rack_name, "privacy_zone": "pii" if r < pii_racks else "internal", "host_pools": [pool]})
    site = {
        "kind": "datacenter", "name": name, "jurisdiction": juris, "country": country,
        "network_zone": f"wan-{name.removeprefix('dc-')}", "racks": out,
        "marginal_cost": {"core_hour_usd": 0.0045, "memory_gib_hour_usd": 0.0003, "gpu_hour_usd": {"L4": 0.09}},
        "max_fail_percentage": 20,
    }
    if name in OBJECT_STORES:
        site["object_store"] = dict(OBJECT_STORES[name])
    return site


def _fv_budget(rtt_ms: float) -> float:
    """A feature-view dependency's budget: the RTT it may cost plus the measured lookup p99 (infra.features)."""
    total = rtt_ms + FEATURE_LOOKUP_P99_MS
    return int(total) if total == int(total) else total


RANKER_DOWNGRADE = "reads aggregated counts per item segment, no per-user values"

SIM_DESCRIPTION = ("Simulated fleet: the prod catalog and sites on local control planes whose nodes are kwok fake "
                   "nodes; the GPUs and racks are simulated, not real (`hybridml local up sim`).")


def _batch(profile: str, scale: int) -> dict:
    """The batch section (README "Batch inference on Ray"): offline LLM and CPU jobs, one-off and recurring, sized so
    that the batch stage places them on the datacenters' headroom and new cloud nodes. Deterministic (no rng: the
    online catalog's draws stay as they were)."""
    small = profile == "dev"
    pipelines = [
        {"name": "catalog-enrich", "description": "One-off: attributes and summaries for the item catalog (vLLM, Ray Data).",
         "engine": {"kind": "vllm", "tensor_parallel": 1, "max_model_len": 8192, "batch_size": 64, "max_tokens": 400},
         "model": "meta-llama/Llama-3.1-8B-Instruct", "input": f"s3://hybridml-batch/{profile}/catalog/items/",
         "output": f"s3://hybridml-batch/{profile}/catalog/enriched/",
         "size": {"items": 200_000 if small else 5_000_000, "tokens_per_item": 800},
         "throughput_per_worker": {"tokens_per_s": 2500}, "deadline_hours": 24, "privacy_tier": "internal",
         "resources": {"cpu": 6, "memory_gib": 40, "gpu": {"type": "L4", "count": 1}}, "max_workers": 64},
        {"name": "nightly-embeddings", "description": "Every night: embeddings of new and changed documents on CPU.",
         "engine": {"kind": "cpu", "image": "ghcr.io/hybridml/batch-embed:0.2.0", "entrypoint": "python -m hybridml_batch.embed"},
         "model": "sentence-transformers/all-MiniLM-L6-v2", "input": f"s3://hybridml-batch/{profile}/docs/changed/",
         "output": f"s3://hybridml-batch/{profile}/docs/embeddings/",
         "size": {"items": 5_000_000 if small else 200_000_000}, "throughput_per_worker": {"items_per_s": 400},
         "schedule": "0 2 * * *", "deadline_hours": 6, "privacy_tier": "internal",
         "resources": {"cpu": 8, "memory_gib": 16}, "max_workers": 128},
        {"name": "profile-scoring", "description": "Every 6 hours: churn and safety scores of user profiles (pii, US only).",
         "engine": {"kind": "cpu", "image": "ghcr.io/hybridml/batch-score:1.3.0", "entrypoint": "python -m hybridml_batch.score"},
         "model": "s3://hybridml-models/profile-scoring/2026-11", "input": f"s3://hybridml-batch/{profile}/profiles/",
         "output": f"s3://hybridml-batch/{profile}/profile-scores/",
         "size": {"items": 1_000_000 if small else 20_000_000}, "throughput_per_worker": {"items_per_s": 250},
         "schedule": "0 */6 * * *", "privacy_tier": "pii", "allowed_jurisdictions": ["US"],
         "resources": {"cpu": 4, "memory_gib": 8}, "head": {"cpu": 1, "memory_gib": 4}},
    ]
    if not small:
        pipelines.append(
            {"name": "eu-doc-summaries", "description": "One-off: summaries of the EU help-centre archive, kept in the EU.",
             "engine": {"kind": "vllm", "tensor_parallel": 8, "max_model_len": 16384, "batch_size": 32, "max_tokens": 600},
             "model": "meta-llama/Llama-3.3-70B-Instruct", "input": "s3://hybridml-batch-eu/prod/archive/",
             "output": "s3://hybridml-batch-eu/prod/archive-summaries/",
             "size": {"items": 2_000_000, "tokens_per_item": 1500}, "throughput_per_worker": {"tokens_per_s": 12000},
             "deadline_hours": 48, "privacy_tier": "internal", "allowed_jurisdictions": ["EU"],
             "resources": {"cpu": 96, "memory_gib": 1024, "gpu": {"type": "H100", "count": 8}}, "max_workers": 8})
    if scale > 1:   # the benchmark fleets: the same jobs once per catalog copy
        pipelines = [{**deepcopy(b), "name": f"{b['name']}-{k:02d}"} for k in range(scale) for b in pipelines]
    return {"pipelines": pipelines}


def generate(profile: str = "prod", scale: int = 1, seed: int = 7, *, name: str | None = None,
             description: str | None = None) -> dict:
    """Build an environment dict. profile: 'dev' (1 region + 1 datacenter) or 'prod'; scale multiplies the catalog.
    name/description override the defaults (the `sim` environment is prod's catalog and sites under another name)."""
    env_name, env_description = name, description  # `name` is reused by the loops below
    rng = random.Random(seed)
    if profile == "dev":
        clouds, dcs, regions = ["aws-use1"], ["dc-ashburn"], ["us-east", "us-west"]
        n_llm, n_triton, n_cpu, n_embed, n_views, n_cols, n_tenants = 4, 4, 5, 2, 4, 2, 3
        demand_scale = 0.05
    else:
        clouds, dcs, regions = list(CLOUD_REGIONS), list(DATACENTERS), list(USER_REGIONS)
        n_llm, n_triton, n_cpu, n_embed, n_views, n_cols, n_tenants = 40, 60, 120, 30, 40, 12, 20
        demand_scale = 1.0
    n_llm, n_triton, n_cpu, n_embed = n_llm * scale, n_triton * scale, n_cpu * scale, n_embed * scale
    n_views, n_cols, n_tenants = n_views * scale, n_cols * scale, n_tenants * scale

    sites = []
    for name in clouds:
        types = ["p5.48xlarge", "p4de.24xlarge", "g6.xlarge", "g6.12xlarge", "g6.48xlarge", "m7i.8xlarge", "c7i.8xlarge", "r7i.8xlarge"]
        sites.append(_cloud_site(name, types, scale))
    for i, name in enumerate(dcs):
        sites.append(_datacenter(name, i, scale, max_racks=2 if profile == "dev" else None))

    user_rtt = {r: {s: USER_RTT[r][s] for s in clouds + dcs} for r in regions}
    site_rtt: dict[str, dict[str, float]] = {}
    names = clouds + dcs
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ms = SITE_RTT.get((a, b), SITE_RTT.get((b, a)))
            site_rtt.setdefault(a, {})[b] = ms

    views = []
    for i in range(n_views):
        pii = i % 3 == 0
        view = {"name": f"{'user' if pii else 'item'}-features-{i:03d}", "entities": ["user_id" if pii else "item_id"],
                "privacy_tier": "pii" if pii else "internal", "online_memory_gib": rng.choice([8, 16, 32]),
                "online_cpu": 2, "streaming": i % 4 == 1}
        # the profile's data, also under another environment name: sim is prod's catalog, sources included
        env_id = profile if scale == 1 else f"{profile}-x{scale}"
        view.update(feature_shapes.shape(i, view["name"], pii, view["online_memory_gib"], view["streaming"], env_id, seed))
        views.append(view)
    cols = [{"name": f"docs-{i:03d}", "dimensions": rng.choice([384, 768, 1024]), "privacy_tier": "internal",
             "memory_gib": rng.choice([16, 32, 64]), "cpu": 4, "replication_factor": 2, "shards": 4}
            for i in range(n_cols)]

    def demand(base: float, regions_used: list[str]) -> dict:
        weights = {"us-east": 0.4, "us-west": 0.3, "eu-west": 0.2, "ap-east": 0.1}
        return {r: round(base * weights[r] * demand_scale * rng.uniform(0.7, 1.3), 1) for r in regions_used}

    pipelines = []
    for i in range(n_llm):
        fam, model, gpu, tp, cap, svc, p99, draft = LLMS[i % len(LLMS)]
        engine = {"kind": "vllm", "tensor_parallel": tp, "max_model_len": rng.choice([8192, 16384, 32768]),
                  "gpu_memory_utilization": 0.9, "served_model_name": f"{fam}-{i:03d}"}
        if draft:
            engine["speculative"] = {"model": draft, "num_speculative_tokens": 5 if draft != "[ngram]" else 4}
        base = {"H100": 50, "A100": 55, "L4": 36}[gpu] * rng.uniform(0.6, 1.4)
        p = {"name": f"{fam}-{i:03d}", "engine": engine, "model": model,
             "resources": {"cpu": 4 * tp, "memory_gib": 32 * tp, "gpu": {"type": gpu, "count": tp}},
             "capacity_rps": cap, "demand_rps": demand(base, regions), "latency": {"p99_ms": p99, "service_ms": svc},
             "privacy_tier": "internal", "min_replicas": 2, "spread": {"min_sites": 2 if profile == "prod" else 1},
             "autoscaling": {"scale_to_zero": i % 7 == 6}}
        quality: list[dict] = []
        if i % 5 == 0:
            p["variants"] = [{"name": "stable", "model": model, "weight": 90}, {"name": "candidate", "model": model, "weight": 10}]
            quality.append({"kind": "ab_metric_delta", "metric": "success_ratio", "max_drop": 0.02, "window": "1h"})
        if fam.startswith("chat"):
            quality.append({"kind": "moderator_flag_rate", "max": 0.01, "window": "1d"})
        if quality:
            p["quality"] = quality
        if i % 3 == 0 and n_cols:
            p["dependencies"] = [{"collection": cols[i % n_cols]["name"], "latency_budget_ms": 20}]
        pipelines.append(p)
    # the ranker that keeps its user view (with a declared downgrade): the last whose pick is one (below)
    keeps = max((i for i in range(0, n_triton, 2) if n_views and views[(i * 3 + 1) % n_views]["privacy_tier"] == "pii"),
                default=None)
    for i in range(n_triton):
        kind = "ranker" if i % 2 == 0 else "safety"
        p = {"name": f"{kind}-{i:03d}", "engine": {"kind": "triton", "model_format": rng.choice(["onnx", "tensorrt"]),
                                                   "max_batch_size": 64},
             "model": f"s3://hybridml-models/{kind}-{i:03d}/v{rng.randint(1, 9)}",
             "resources": {"cpu": 4, "memory_gib": 16, "gpu": {"type": "L4", "count": 1}},
             "capacity_rps": 400, "demand_rps": demand(rng.uniform(600, 2400), regions),
             "latency": {"p99_ms": 250, "service_ms": 60}, "privacy_tier": "internal", "min_replicas": 2}
        if i % 10 == 1 and i + 2 < n_triton:
            p["shadow"] = {"target": f"{'ranker' if (i + 2) % 2 == 0 else 'safety'}-{i + 2:03d}", "percent": 10}
        if kind == "ranker" and n_views:
            # Privacy follows the data (infra/dataflow.py): an internal ranker on cloud L4s may not read a pii user view
            # (no pii site has L4s). Rankers read item views; the last whose pick is a user view keeps it with a
            # named downgrade (it reads only aggregates), the others read the next item view.
            view = views[(i * 3 + 1) % n_views]
            dep: dict = {"feature_view": view["name"], "latency_budget_ms": _fv_budget(20)}
            if i == keeps:
                dep["downgrade"] = {"to": "internal", "reason": RANKER_DOWNGRADE}
            elif view["privacy_tier"] == "pii":
                dep["feature_view"] = next(v["name"] for k in range(1, n_views + 1)
                                           if (v := views[(i * 3 + 1 + k) % n_views])["privacy_tier"] != "pii")
            p["dependencies"] = [dep]
        if kind == "ranker" and i % 4 == 0:
            p["quality"] = [{"kind": "prediction_drift", "max_psi": 0.2, "window": "6h", "reference": "7d"}]
        pipelines.append(p)
    for i in range(n_cpu):
        pii = i % 2 == 0
        p = {"name": f"{'personalize' if pii else 'recs'}-{i:03d}",
             "engine": {"kind": "cpu", "image": f"ghcr.io/hybridml/recs-service:1.{i % 9}.{i % 5}", "port": 8080},
             "model": f"s3://hybridml-models/recs-{i:03d}/2026-11",
             "resources": {"cpu": 8, "memory_gib": 16}, "capacity_rps": 250,
             "demand_rps": demand(rng.uniform(4000, 9000), [r for r in regions if not (pii and r == "ap-east")]),
             "latency": {"p99_ms": 120, "service_ms": 45}, "privacy_tier": "pii" if pii else "internal",
             "min_replicas": 2, "spread": {"min_replicas_per_site": 2}}
        if n_views:
            pool = [v for v in views if (v["privacy_tier"] == "pii") == pii]
            view = pool[(i * 7) % len(pool)]
            p["dependencies"] = [{"feature_view": view["name"], "latency_budget_ms": _fv_budget(5)}]
        pipelines.append(p)
    for i in range(n_embed):
        p = {"name": f"embed-{i:03d}", "engine": {"kind": "cpu", "image": "ghcr.io/hybridml/embedder:0.9.1", "port": 8080},
             "model": "sentence-transformers/all-MiniLM-L6-v2", "resources": {"cpu": 4, "memory_gib": 8},
             "capacity_rps": 120, "demand_rps": demand(rng.uniform(800, 2000), regions),
             "latency": {"p99_ms": 150, "service_ms": 25}, "privacy_tier": "public", "min_replicas": 2}
        if n_cols:
            p["dependencies"] = [{"collection": cols[i % n_cols]["name"], "latency_budget_ms": 10}]
        pipelines.append(p)

    llm_names = [p["name"] for p in pipelines if p["engine"]["kind"] == "vllm"]
    tenants = []
    for t in range(n_tenants):
        picks = sorted(rng.sample(llm_names, k=min(3, len(llm_names))))
        tenants.append({"name": f"tenant-{t:03d}", "budgets": [
            {"pipeline": name, "tokens_per_minute": rng.choice([100_000, 250_000, 500_000, 1_000_000])} for name in picks]})

    return {
        "name": env_name or (profile if scale == 1 else f"{profile}-x{scale}"),
        "description": env_description or ("One AWS region and one datacenter for integration." if profile == "dev" else
                                       "Reference scale: 4 AWS regions, 3 own datacenters, ~250 pipelines."),
        "user_regions": [{"name": r, "jurisdiction": USER_REGIONS[r]} for r in regions],
        "sites": sites,
        "network": {"user_rtt_ms": user_rtt, "site_rtt_ms": site_rtt},
        "feature_views": views, "collections": cols, "pipelines": pipelines, "tenants": tenants,
        "batch": _batch(profile, scale),
    }
