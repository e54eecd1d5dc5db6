"""Shared fixtures: shipped environments, a tiny spec builder, and the CI guard for real-infra tests."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip outside CI when a real-infra prerequisite is missing; in CI, fail loudly instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: .ci/run must provide it", pytrace=False)
    print(f"SKIP: {reason}")
    pytest.skip(reason)


SMALL_SPEC = {
    "name": "tiny",
    "user_regions": [{"name": "us-east", "jurisdiction": "US"}, {"name": "eu-west", "jurisdiction": "EU"}],
    "sites": [
        {"kind": "cloud", "name": "aws-use1", "region": "us-east-1", "zones": ["us-east-1a", "us-east-1b"],
         "jurisdiction": "US", "vpc_cidr": "10.0.0.0/16",
         "instance_types": [
             {"name": "g6.xlarge", "vcpus": 4, "memory_gib": 16, "gpu": {"type": "L4", "count": 1, "memory_gib": 24},
              "hourly_usd": 0.8},
             {"name": "p5.48xlarge", "vcpus": 192, "memory_gib": 2048,
              "gpu": {"type": "H100", "count": 8, "memory_gib": 80}, "hourly_usd": 55.0},
             {"name": "m7i.2xlarge", "vcpus": 8, "memory_gib": 32, "hourly_usd": 0.4}],
         "vcpu_quotas": {"P": 768, "G": 64, "standard": 256}},
        {"kind": "datacenter", "name": "dc-ash", "jurisdiction": "US", "country": "US", "network_zone": "wan-us",
         "racks": [
             {"name": "r1", "privacy_zone": "internal",
              "host_pools": [{"count": 2, "name_prefix": "ash-r1-h", "first_address": "10.1.1.10", "cores": 32, "memory_gib": 128}]},
             {"name": "r2", "privacy_zone": "pii",
              "host_pools": [{"count": 2, "name_prefix": "ash-r2-h", "first_address": "10.1.2.10", "cores": 32, "memory_gib": 128}]}]},
        {"kind": "datacenter", "name": "dc-ams", "jurisdiction": "EU", "country": "NL", "network_zone": "wan-eu",
         "racks": [{"name": "r1", "privacy_zone": "pii",
                    "host_pools": [{"count": 2, "name_prefix": "ams-r1-h", "first_address": "10.2.1.10", "cores": 32, "memory_gib": 128}]}]},
    ],
    "network": {
        "user_rtt_ms": {"us-east": {"aws-use1": 8, "dc-ash": 6, "dc-ams": 85},
                        "eu-west": {"aws-use1": 78, "dc-ash": 80, "dc-ams": 10}},
        "site_rtt_ms": {"aws-use1": {"dc-ash": 2, "dc-ams": 78}, "dc-ash": {"dc-ams": 80}},
    },
    "feature_views": [{"name": "user-profile", "entities": ["user_id"], "privacy_tier": "pii"}],
    "pipelines": [
        {"name": "chat", "engine": {"kind": "vllm", "tensor_parallel": 8}, "model": "meta-llama/Llama-3.3-70B-Instruct",
         "resources": {"cpu": 16, "memory_gib": 200, "gpu": {"type": "H100", "count": 8}}, "capacity_rps": 10,
         "demand_rps": {"us-east": 20, "eu-west": 5}, "latency": {"p99_ms": 2500, "service_ms": 2000}},
        {"name": "recs", "engine": {"kind": "cpu", "image": "ghcr.io/x/recs:1.0.0"}, "model": "s3://m/recs",
         "resources": {"cpu": 4, "memory_gib": 8}, "capacity_rps": 100,
         "demand_rps": {"us-east": 300, "eu-west": 200}, "latency": {"p99_ms": 100, "service_ms": 40},
         "privacy_tier": "pii", "dependencies": [{"feature_view": "user-profile", "latency_budget_ms": 17}]},  # 2 ms RTT + 15 lookup
    ],
    "tenants": [{"name": "t1", "budgets": [{"pipeline": "chat", "tokens_per_minute": 1000}]}],
}


@pytest.fixture
def small_spec() -> dict:
    return copy.deepcopy(SMALL_SPEC)


def dump(spec: dict) -> str:
    return yaml.safe_dump(spec, sort_keys=False)
