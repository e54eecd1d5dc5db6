"""checkov on the rendered manifests of dev and prod: 0 failed checks, apart from the skips listed with
their reasons in workloads/checkov-skips.yaml. checkov runs from its own virtualenv (.venv-checkov,
created by scripts/checkov_venv.sh) because it pins old versions of packages the project uses."""
from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require
from tests.workloads.conftest import rendered

SKIPS_FILE = REPO / "workloads" / "checkov-skips.yaml"


def skips() -> list[dict]:
    return yaml.safe_load(SKIPS_FILE.read_text())["skips"]


@pytest.fixture(scope="session")
def checkov() -> Path:
    try:
        out = subprocess.run([str(REPO / "scripts" / "checkov_venv.sh")], capture_output=True, text=True,
                             timeout=1200, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired) as exc:  # pragma: no cover - environment problem
        require(False, f"could not create the checkov virtualenv: {exc}")
    require(out.returncode == 0, f"could not create the checkov virtualenv: {out.stderr[-800:]}")
    binary = REPO / out.stdout.strip().splitlines()[-1]
    require(binary.exists(), f"checkov not found at {binary}")
    return binary


def _checkov_once(binary: Path, workdir: Path, skip: list[str]) -> dict:
    cmd = [str(binary), "-d", str(workdir), "--framework", "kubernetes", "-o", "json", "--skip-download"]
    if skip:
        cmd += ["--skip-check", ",".join(skip)]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_CREATE_GRAPH": "True", "LOG_LEVEL": "ERROR"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3000, env=env)
    assert proc.stdout.strip(), f"checkov printed nothing (rc {proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    k8s = [r for r in reports if r.get("check_type") == "kubernetes"]
    assert k8s, f"no kubernetes report: {proc.stdout[:500]}"
    return k8s[0]


def run_checkov(binary: Path, manifests: dict[str, list[dict]], workdir: Path, skip: list[str]) -> dict:
    """One checkov run per site (a site's namespaces, pods and NetworkPolicies stay together for the graph
    checks), runs in parallel over the cores; the reports are merged."""
    dirs = []
    for site, docs in manifests.items():
        d = workdir / site
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{site}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        dirs.append(d)
    with ThreadPoolExecutor(max_workers=max(1, min(len(dirs), os.cpu_count() or 1))) as pool:
        reports = list(pool.map(lambda d: _checkov_once(binary, d, skip), dirs))
    merged = {"summary": {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0, "resource_count": 0},
              "results": {"failed_checks": []}}
    for r in reports:
        for key in merged["summary"]:
            merged["summary"][key] += r["summary"].get(key, 0)
        merged["results"]["failed_checks"] += r["results"]["failed_checks"]
    return merged


# What checkov's Kubernetes checks read of an object is its shape: security contexts, images and pull policies,
# capabilities, probes and resources present or not, volumes, service accounts, security annotations. Names, label
# values and sizes only tell ~250 pipelines rendered from a few templates apart.
SHAPE_STRINGS = {"image", "imagePullPolicy", "kind", "apiVersion", "type", "protocol", "operator", "effect", "key",
                 "medium", "add", "drop", "namespace", "serviceAccountName", "automountServiceAccountToken",
                 "runtimeClassName", "seccompProfile"}
SIZES = {"replicas", "minReplicas", "maxReplicas", "cpu", "memory", "nvidia.com/gpu", "storage", "ephemeral-storage"}
GRAPH_KINDS = {"Namespace", "NetworkPolicy", "ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
"""Kept whole: checkov's graph checks connect pods to these by name."""


def shape(value, key: str | None = None, keep: bool = False):
    if isinstance(value, dict):
        if key in ("labels", "annotations"):
            return {k: (v if any(w in k for w in ("apparmor", "seccomp", "security")) else "<s>")
                    for k, v in sorted(value.items())}
        return {k: shape(v, k, keep or k in SHAPE_STRINGS) for k, v in sorted(value.items()) if k != "name"} | (
            {"name": "<n>"} if "name" in value else {})
    if isinstance(value, list):
        return sorted({json.dumps(shape(v, key, keep), sort_keys=True) for v in value})
    if isinstance(value, str):
        return value if keep else "<s>"
    return "<n>" if key in SIZES else value


def distinct_shapes(manifests: list[dict]) -> list[dict]:
    """One object per distinct shape (and every object of GRAPH_KINDS), in render order."""
    seen: set[str] = set()
    out = []
    for m in manifests:
        sig = json.dumps(shape(m), sort_keys=True)
        if m.get("kind") in GRAPH_KINDS or sig not in seen:
            seen.add(sig)
            out.append(m)
    return out


def test_shapes_tell_apart_what_checkov_reads_and_nothing_else():
    def pod(name: str, **security) -> dict:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
                "spec": {"replicas": len(name), "template": {"spec": {"containers": [{
                    "name": name, "image": "ghcr.io/x/y:1.0", "args": [f"--model={name}"],
                    "resources": {"requests": {"cpu": len(name)}}, "securityContext": security}]}}}}
    same = [pod("ranker-001", privileged=False), pod("ranker-0022", privileged=False)]
    assert len(distinct_shapes(same)) == 1
    assert len(distinct_shapes(same + [pod("ranker-003", privileged=True)])) == 2
    other_image = pod("ranker-004", privileged=False)
    other_image["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:latest"
    assert len(distinct_shapes(same + [other_image])) == 2


def test_every_skip_has_a_reason():
    entries = skips()
    assert entries
    for s in entries:
        assert s["id"].startswith("CKV") and len(s["reason"].split()) >= 10, s


@pytest.mark.parametrize("name", ["dev", pytest.param("prod", marks=pytest.mark.slow)])
def test_checkov_passes_on_rendered_manifests(name, checkov, tmp_path):
    stack = rendered(name)
    by_site: dict[str, list[dict]] = {}
    for o in stack.objects:
        by_site.setdefault(o.site, []).append(o.manifest)
    if name == "prod":   # ~8,500 objects; ~1,500 distinct shapes carry every check result (dev runs whole)
        by_site = {site: distinct_shapes(docs) for site, docs in by_site.items()}
    report = run_checkov(checkov, by_site, tmp_path / name, [s["id"] for s in skips()])
    summary = report["summary"]
    failed = report["results"]["failed_checks"]
    lines = [f"{f['check_id']} {f['check_name']}: {f['resource']} ({f['file_path']})" for f in failed]
    print(f"checkov {name}: {sum(len(d) for d in by_site.values())} objects: {summary}")
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 1000
    assert not failed, f"{len(failed)} failed checks:\n" + "\n".join(lines[:40])


def test_checkov_flags_a_bad_pod(checkov, tmp_path):
    """The gate is real: a privileged root pod with an unpinned image fails the same run."""
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad", "namespace": "ml-internal"},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
               "metadata": {"labels": {"a": "b"}},
               "spec": {"containers": [{"name": "c", "image": "nginx:latest",
                                        "securityContext": {"privileged": True}}]}}}}
    report = run_checkov(checkov, {"bad": [bad]}, tmp_path / "bad", [s["id"] for s in skips()])
    ids = {f["check_id"] for f in report["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_14", "CKV_K8S_20"} <= ids, ids
