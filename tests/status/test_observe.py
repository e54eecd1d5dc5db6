"""hybridml.ops.observe without a cluster: an unreachable API server or a missing context is reported, not raised."""
from __future__ import annotations

import yaml

from hybridml.ops.observe import observe_fleet


def test_unreachable_and_unknown_contexts_are_reported(tmp_path):
    kc = tmp_path / "kubeconfig"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "dead",
        "clusters": [{"name": "dead", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}]}))
    fleet = observe_fleet(kc, {"a": "dead", "b": "missing"})
    a, b = fleet.clusters["a"], fleet.clusters["b"]
    assert not a.reachable and "Connection refused" in a.error and a.context == "dead"
    assert not b.reachable and "'missing'" in b.error
    assert a.fetch_seconds < 10 and fleet.fetch_seconds < 10
