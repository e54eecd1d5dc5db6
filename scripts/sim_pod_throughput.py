#!/usr/bin/env python3
"""Pod throughput of a local kwok fleet (default: the `sim` environment's control planes).

Creates one Deployment per cluster (replicas in proportion to the cluster's nodes, N in total,
tolerating every taint so GPU and privacy-zone nodes take pods too), times until every pod is
Running, reads each kube-apiserver's mutating-call p99 for the calls made meanwhile (against the
1 s SLO), then deletes the Deployments and times until the pods are gone.

    hybridml local up sim
    .venv/bin/python scripts/sim_pod_throughput.py --pods 3000 [--env sim] [--json out/sim_pods.json]

Exit 1 when not every pod is Running within --timeout or the SLO is violated.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hybridml.local.controlplane import api_client, status  # noqa: E402
from hybridml.local.paths import state_dir_for  # noqa: E402
from tools.sim_metrics import component_cpu_seconds, fetch_metrics, mutating_latency  # noqa: E402

NAMESPACE = "sim-bench"
NAME = "throughput-probe"


def _deployment(replicas: int) -> dict:
    labels = {"app": NAME}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "100%"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "tolerations": [{"operator": "Exists"}],
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "probe", "image": "registry.k8s.io/pause:3.10",
                                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
                },
            },
        },
    }


def _running(api) -> int:
    items = api.list_metadata(f"/api/v1/namespaces/{NAMESPACE}/pods",
                              {"labelSelector": f"app={NAME}", "fieldSelector": "status.phase=Running"})
    return len(items)


def _remaining(api) -> int:
    return len(api.list_metadata(f"/api/v1/namespaces/{NAMESPACE}/pods", {"labelSelector": f"app={NAME}"}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="sim")
    ap.add_argument("--pods", type=int, default=3000)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--keep", action="store_true", help="leave the Deployments in place")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    sd = state_dir_for(args.env)
    clusters = [n for n, s in status(sd).items() if s.running]
    if not clusters:
        print(f"no running clusters in {sd} (hybridml local up {args.env})")
        return 1
    apis = {n: api_client(n, sd) for n in clusters}
    nodes = {n: len(api.list_metadata("/api/v1/nodes")) for n, api in apis.items()}
    total_nodes = sum(nodes.values())
    replicas = {n: max(1, round(args.pods * k / total_nodes)) for n, k in nodes.items()}
    want = sum(replicas.values())
    print(f"{want} pods over {len(clusters)} clusters / {total_nodes} nodes: {replicas}")

    baseline = {}
    for api in apis.values():
        if api.get_or_none(f"/api/v1/namespaces/{NAMESPACE}") is None:
            api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        api.delete(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}")
    t_clean = time.monotonic()  # the pods of an earlier, interrupted run must be gone first
    while any(_remaining(a) for a in apis.values()) and time.monotonic() - t_clean < args.timeout:
        for api in apis.values():
            api.request("DELETE", f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets",
                        params={"labelSelector": f"app={NAME}"}, ok=(200, 404))
        time.sleep(3)
    for n, api in apis.items():
        baseline[n] = fetch_metrics(api)

    cpu0 = component_cpu_seconds(sd)
    t0 = time.monotonic()
    for n, api in apis.items():
        api.post(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", _deployment(replicas[n]))
    done: dict[str, float] = {}
    running = dict.fromkeys(clusters, 0)
    last_print = 0.0
    while len(done) < len(clusters) and time.monotonic() - t0 < args.timeout:
        with ThreadPoolExecutor(len(clusters)) as pool:
            counts = dict(zip([n for n in clusters if n not in done],
                              pool.map(lambda n: _running(apis[n]), [n for n in clusters if n not in done]), strict=False))
        for n, c in counts.items():
            running[n] = c
            if c >= replicas[n]:
                done[n] = time.monotonic() - t0
        el = time.monotonic() - t0
        if el - last_print >= 10:
            print(f"  {el:5.0f}s running {sum(running.values())}/{want}", flush=True)
            last_print = el
        time.sleep(2)
    all_running = time.monotonic() - t0 if len(done) == len(clusters) else None
    cpu1, wall = component_cpu_seconds(sd), time.monotonic() - t0
    cpu = {c: round(cpu1.get(c, 0) - cpu0.get(c, 0), 1) for c in cpu1}
    print(f"CPU seconds per component while starting the pods ({wall:.0f}s wall, {os.cpu_count()} CPUs): {cpu}")

    slo = {}
    for n, api in apis.items():
        slo[n] = mutating_latency(fetch_metrics(api), baseline[n])
    result = {"pods": want, "clusters": replicas, "all_running_s": all_running, "per_cluster_running_s": done,
              "cpu_seconds": cpu,
              "latency": {n: r.to_dict() for n, r in slo.items()}}
    print(f"all {want} pods Running after {all_running:.1f}s" if all_running is not None else
          f"NOT all Running after {args.timeout:.0f}s: {sum(running.values())}/{want}")
    for n, r in slo.items():
        print(f"  {n}: {r.summary()}")

    if not args.keep:
        t1 = time.monotonic()
        for api in apis.values():
            api.request("DELETE", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}",
                        {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
                        ok=(200, 202, 404))
        while time.monotonic() - t1 < args.timeout and sum(_remaining(a) for a in apis.values()):
            time.sleep(3)
        result["deleted_s"] = time.monotonic() - t1
        print(f"deleted in {result['deleted_s']:.1f}s")
    for api in apis.values():
        api.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    ok = all_running is not None and all(r.ok for r in slo.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
