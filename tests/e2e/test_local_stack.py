"""End to end, for real: the `local` stack through the Go-built Pulumi CLI and Kubernetes provider onto
local control planes whose nodes are simulated by kwok.

One set of local clusters for the whole module (own state dir, own file:// backend, own copy of the
project whose stack config is Pulumi.local.yaml with only the kubeconfig pointing at those clusters),
so a developer's `.local/` clusters and `.state/` stacks are never touched. In order:

1. `pulumi up --stack local --yes` deploys namespaces, quotas and the serving stack; every
   Deployment/StatefulSet becomes ready, pods Running on kwok nodes; GPU pods only on GPU nodes of
   the GPU cluster, pii/restricted pods only on on-prem nodes of their zones.
2. A second `pulumi up` and `pulumi preview --expect-no-changes` report no changes.
3. The CrossGuard pack through the real CLI: `pulumi preview --policy-pack policies/pack` passes on the
   shipped stack and blocks deliberately broken variants (tests/e2e/fixtures/broken_program).
4. `pulumi destroy` removes everything; SIGINT during `pulumi up`, then `pulumi up` again converges
   with no orphans (pending operations cleared as scripts/pulumi_env.sh does); a final destroy
   leaves the clusters as `hybridml local up` made them.
5. The sharded rollout (issue 8) on the same clusters: `hybridml up local` drives the site stacks
   and the fleet stack through the Automation API and deploys exactly the objects the single stack
   did plus nothing else; `hybridml preview local --engine --expect-no-changes` passes;
   `hybridml destroy local` leaves the clusters clean; a site whose cluster is down fails alone (the
   other site still rolls out, the fleet stack is skipped and says why).

Needs the toolchain (scripts/toolchain.sh) and the CRDs (../shared/crds or $HYBRIDML_CRD_DIR). Outside CI
a missing toolchain skips (reason printed); with CI=true it fails. Timings are printed at the end.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hybridml.local.controlplane import api_client, down
from hybridml.local.fromspec import cluster_name
from hybridml.local.paths import DEFAULT_CRD_DIR
from hybridml.local.sites import up_local
from infra import labels as L
from tests.conftest import REPO, require
from tests.e2e import kube

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOCAL_SPEC = REPO / "infra" / "environments" / "local.yaml"
CRD_DIR = Path(os.environ.get("HYBRIDML_CRD_DIR") or DEFAULT_CRD_DIR)
PACK = REPO / "policies" / "pack"
BROKEN_PROGRAM = REPO / "tests" / "e2e" / "fixtures" / "broken_program"
SITES = ("aws-use1", "dc-local")
PASSPHRASE = "local-only"   # the local stack holds no secret
UP_TIMEOUT = 900
TIMINGS: dict[str, float] = {}
MONOLITH: dict[str, set] = {}     # what the whole-environment stack deployed (the sharded rollout must match)


# --------------------------------------------------------------------------- environment


def _toolchain_env() -> dict[str, str]:
    """The environment `eval "$(scripts/toolchain.sh --env)"` gives, without building anything."""
    from hybridml.local.toolchain import script_environment

    exported, why = script_environment()
    require(exported is not None, f"the local toolchain is not built (scripts/toolchain.sh --check: {why})")
    env = {**os.environ, **exported}
    if os.environ.get("HYBRIDML_PULUMI_BIN_DIR"):   # another build of the CLI (e.g. a patched language host)
        env["PATH"] = os.environ["HYBRIDML_PULUMI_BIN_DIR"] + os.pathsep + env["PATH"]
    return env


class Stack:
    """A Pulumi project copy + stack in a private file:// backend, run with the Go-built CLI."""

    def __init__(self, root: Path, env: dict[str, str], kubeconfig: Path):
        self.root = root
        self.kubeconfig = kubeconfig
        self.project = root / "project"
        self.backend = root / "backend"
        self.backend.mkdir(parents=True, exist_ok=True)
        self.env = {**env, "PULUMI_BACKEND_URL": f"file://{self.backend}", "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
                    "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
                    "PULUMI_SKIP_CONFIRMATIONS": "true"}
        self.env.pop("PULUMI_ACCESS_TOKEN", None)
        venv = Path(sys.prefix)
        self._copy_project(self.project, REPO / "Pulumi.yaml", REPO / "__main__.py", venv)
        config = yaml.safe_load((REPO / "Pulumi.local.yaml").read_text())
        config["config"]["hybridml:spec"] = str(LOCAL_SPEC)
        config["config"]["hybridml:localKubeconfig"] = str(kubeconfig)
        config["config"]["hybridml:bootstrapRacks"] = False   # racks: tests/datacenter/test_pulumi_racks_real.py
        (self.project / "Pulumi.local.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        self.pulumi("stack", "init", "local", check=True)

    @staticmethod
    def _copy_project(dst: Path, pulumi_yaml: Path, main: Path, venv: Path) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        project = yaml.safe_load(pulumi_yaml.read_text())
        project.setdefault("runtime", {}).setdefault("options", {})["virtualenv"] = str(venv)
        (dst / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
        shutil.copy(main, dst / "__main__.py")

    def pulumi(self, *args: str, cwd: Path | None = None, check: bool = False, timeout: float = UP_TIMEOUT,
               stack: str | None = None) -> subprocess.CompletedProcess:
        cmd = ["pulumi", *args, "--non-interactive"]
        if stack:
            cmd += ["--stack", stack]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=cwd or self.project, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        proc.seconds = time.monotonic() - t0  # type: ignore[attr-defined]
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{_tail(proc)}")
        return proc

    def up(self, *extra: str) -> subprocess.CompletedProcess:
        return self.pulumi("up", "--yes", "--skip-preview", "--diff=false", *extra, stack="local", check=True)

    def export(self, stack: str = "local") -> dict:
        return json.loads(self.pulumi("stack", "export", stack=stack, check=True).stdout)

    def state_objects(self, stack: str = "local") -> set[tuple[str, str, str, str]]:
        """(cluster, kind, namespace, name) of every Kubernetes object in the stack's state."""
        deployment = self.export(stack)["deployment"]
        providers = {}
        for r in deployment.get("resources") or []:
            if r["type"] == "pulumi:providers:kubernetes":
                providers[f"{r['urn']}::{r['id']}"] = (r.get("inputs") or {}).get("context")
        out = set()
        for r in deployment.get("resources") or []:
            if not r["type"].startswith("kubernetes:") or not r.get("custom"):
                continue
            meta = (r.get("outputs") or {}).get("metadata") or (r.get("inputs") or {}).get("metadata") or {}
            kind = r["type"].rsplit(":", 1)[1]
            out.add((providers.get(r.get("provider"), "?"), kind, meta.get("namespace") or "", meta.get("name") or ""))
        return out


def _tail(proc, n: int = 6000) -> str:
    return ((proc.stdout or "") + "\n" + (proc.stderr or ""))[-n:]


def _changes(output: str) -> dict[str, int]:
    """The change counts of a `pulumi up/preview` summary (created, updated, deleted, replaced...)."""
    out = {}
    for n, what in re.findall(r"^\s*[-+~]*\s*(\d+) (to create|created|to update|updated|to delete|deleted|"
                              r"to replace|replaced|to import|imported)\b", output, re.M):
        out[what] = int(n)
    return out


@pytest.fixture(scope="module")
def clusters(tmp_path_factory, request):
    env = _toolchain_env()
    require(CRD_DIR.is_dir(), f"the CRD directory {CRD_DIR} is missing (set HYBRIDML_CRD_DIR)")
    root = tmp_path_factory.mktemp("local-stack")
    state_dir = root / "clusters"
    t0 = time.monotonic()
    try:
        res = up_local(LOCAL_SPEC, state_dir, CRD_DIR)
    except BaseException:       # a failed or interrupted start stops what it started
        down(state_dir)
        raise
    TIMINGS["control planes (cold, CRDs included)"] = time.monotonic() - t0
    yield {"env": env, "root": root, "state_dir": state_dir, "kubeconfig": res.kubeconfig, "t0": t0,
           "clusters": res.clusters}
    down(state_dir)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for k, v in TIMINGS.items():
            reporter.write_line(f"e2e timing: {k}: {v:.1f} s")


@pytest.fixture(scope="module")
def stack(clusters):
    return Stack(clusters["root"], clusters["env"], clusters["kubeconfig"])


@pytest.fixture(scope="module")
def apis(clusters):
    clients = {site: api_client(cluster_name(site), clusters["state_dir"]) for site in SITES}
    yield clients
    for c in clients.values():
        c.close()


# --------------------------------------------------------------------------- cluster checks


# --------------------------------------------------------------------------- the tests


def test_up_deploys_the_serving_stack_and_every_workload_becomes_ready(clusters, stack, apis):
    proc = stack.up()
    TIMINGS["pulumi up (first)"] = proc.seconds
    changes = _changes(proc.stdout)
    assert changes.get("created", 0) > 100, _tail(proc)
    # Pulumi waited for readiness; the clusters agree
    kube.wait("every Deployment/StatefulSet ready, InferenceService Ready and pod Running",
              lambda: not kube.workloads_ready(apis) and not kube.serving_not_ready(apis), timeout=180)
    TIMINGS["warm toolchain -> all pods Running"] = time.monotonic() - clusters["t0"]
    state = stack.state_objects()
    kinds = {k for _, k, _, _ in state}
    assert {"Namespace", "ResourceQuota", "Deployment", "StatefulSet", "Service", "NetworkPolicy"} <= kinds
    for site in SITES:
        ctx = cluster_name(site)
        namespaces = {n for c, k, _, n in state if c == ctx and k == "Namespace"}
        quotas = {ns for c, k, ns, _ in state if c == ctx and k == "ResourceQuota"}
        assert {"hybridml-gateway", "ml-internal"} <= namespaces, (site, namespaces)
        assert quotas and quotas <= namespaces
    MONOLITH["objects"] = state
    pods = kube.pods(apis)
    nodes = kube.nodes(apis)
    assert sum(len(p) for p in pods.values()) >= 15
    for site, site_pods in pods.items():
        for p in site_pods:
            if (p.get("status") or {}).get("phase") == "Succeeded":     # Job pods (kwok completes them)
                continue
            node = nodes[site].get(p["spec"].get("nodeName"))
            assert node is not None, f"{site} pod {p['metadata']['name']} not scheduled"
            assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
            assert node["metadata"]["labels"].get(L.SIMULATED) == "true"
            assert p["status"]["phase"] == "Running", (site, p["metadata"]["name"], p["status"].get("phase"))


def test_gpu_pods_only_on_gpu_nodes_and_sensitive_pods_only_in_their_zones(clusters, apis):
    pods, nodes = kube.pods(apis), kube.nodes(apis)
    gpu_pods = [(s, p) for s, ps in pods.items() for p in ps if kube.gpu_request(p)]
    assert gpu_pods, "the local spec runs GPU pipelines"
    for site, p in gpu_pods:
        node = nodes[site][p["spec"]["nodeName"]]
        assert site == "aws-use1", f"GPU pod {p['metadata']['name']} on {site}"
        assert int(node["status"]["capacity"].get(L.GPU_RESOURCE, 0)) >= kube.gpu_request(p)
        wanted = (p["spec"].get("nodeSelector") or {}).get(L.GPU_PRODUCT)
        assert wanted is None or node["metadata"]["labels"][L.GPU_PRODUCT] == wanted
    sensitive = 0
    for site, ps in pods.items():
        for p in ps:
            tier = (p["metadata"].get("labels") or {}).get(L.PRIVACY_TIER) or \
                p["metadata"]["namespace"].removeprefix("ml-")
            if tier not in ("pii", "restricted"):
                continue
            sensitive += 1
            node = nodes[site][p["spec"]["nodeName"]]
            labels = node["metadata"]["labels"]
            assert labels[L.SITE_KIND] == "datacenter", f"{tier} pod {p['metadata']['name']} on {site}"
            assert labels[L.PRIVACY_ZONE] in L.zones_allowed_for(tier), (p["metadata"]["name"], labels)
    assert sensitive >= 2, "the local spec places pii pipelines and feature views on premises"


def test_second_up_and_preview_report_no_changes(stack):
    proc = stack.up()
    TIMINGS["pulumi up (no-op)"] = proc.seconds
    changes = _changes(proc.stdout)
    assert not changes, f"a second `pulumi up` changed {changes}:\n{_tail(proc)}"
    assert re.search(r"\d+ unchanged", proc.stdout), _tail(proc)
    preview = stack.pulumi("preview", "--expect-no-changes", "--diff=false", stack="local")
    TIMINGS["pulumi preview --expect-no-changes"] = preview.seconds
    assert preview.returncode == 0, _tail(preview)


def test_fleet_status_reports_the_deployed_stack_healthy(clusters, tmp_path):
    """`hybridml status local --json` against the deployed clusters: exit 0, every planned pipeline ready
    (Triton pipelines included: the real KServe controller of each local control plane runs their predictor pods)."""
    from tests.status.e2e import check_fleet_status

    TIMINGS["hybridml status local"] = check_fleet_status(clusters["kubeconfig"], tmp_path)


def _require_policy_runtime(proc) -> None:
    if "RunPlugin not implemented" in proc.stdout + proc.stderr:
        pytest.fail("the Go-built Python language host cannot run policy packs (RunPlugin not implemented): "
                    "apply out/patches/langhost-runplugin.patch to scripts/toolchain/langhost/main.go and rebuild "
                    "(scripts/toolchain.sh)", pytrace=False)


def test_crossguard_pack_passes_on_the_shipped_stack(stack):
    proc = stack.pulumi("preview", "--policy-pack", str(PACK), "--diff=false", stack="local")
    TIMINGS["pulumi preview --policy-pack (shipped stack)"] = proc.seconds
    _require_policy_runtime(proc)
    assert proc.returncode == 0, _tail(proc)
    assert "hybridml@" in proc.stdout and "[mandatory]" not in proc.stdout, _tail(proc)


@pytest.fixture(scope="module")
def broken(stack, clusters):
    """The broken-variant program: a project copy with its own stack in the same private backend."""
    project = clusters["root"] / "broken-program"
    Stack._copy_project(project, BROKEN_PROGRAM / "Pulumi.yaml", BROKEN_PROGRAM / "__main__.py", Path(sys.prefix))
    stack.pulumi("stack", "init", "broken", cwd=project, check=True)
    stack.pulumi("config", "set", "kubeconfig", str(clusters["kubeconfig"]), cwd=project, check=True,
                 stack="broken")
    # the pack reads the site facts from the stack's own spec, as the program does
    stack.pulumi("config", "set", "hybridml:spec", "local", cwd=project, check=True, stack="broken")
    return project


@pytest.mark.parametrize("variant,rule", [
    ("privileged", "pss-privileged"),
    ("unpinned", "k8s-pinned-images"),
    ("pii-on-cloud", "privacy-tier-on-allowed-cluster"),
    ("gpu-untolerated", "gpu-pod-scheduling"),
    ("pii-state-to-bucket", "flink-state-in-site"),   # the data paths (issue 18); offline: tests/policies/test_datapaths.py
    ("redis-without-tls", "data-path-tls"),
])
def test_crossguard_pack_blocks_a_broken_variant(stack, broken, variant, rule):
    stack.pulumi("config", "set", "variant", variant, cwd=broken, check=True, stack="broken")
    proc = stack.pulumi("preview", "--policy-pack", str(PACK), "--diff=false", cwd=broken, stack="broken")
    _require_policy_runtime(proc)
    assert proc.returncode != 0, f"the pack let the {variant} variant through:\n{_tail(proc)}"
    assert re.search(rf"\[mandatory\]\s+{re.escape(rule)}\b", proc.stdout), _tail(proc)


def test_crossguard_pack_reads_the_stack_own_spec(stack, broken):
    """The same H100 pod on aws-use1: blocked under the local spec (L4 only there), let through when the
    stack's `hybridml:spec` is prod (H100 nodes there). The pack reads each stack's own facts, never a default."""
    stack.pulumi("config", "set", "variant", "h100", cwd=broken, check=True, stack="broken")
    try:
        proc = stack.pulumi("preview", "--policy-pack", str(PACK), "--diff=false", cwd=broken, stack="broken")
        _require_policy_runtime(proc)
        assert proc.returncode != 0 and re.search(r"\[mandatory\]\s+gpu-type-on-cluster\b", proc.stdout), _tail(proc)
        assert "offers NVIDIA-L4" in proc.stdout, _tail(proc)
        stack.pulumi("config", "set", "hybridml:spec", "prod", cwd=broken, check=True, stack="broken")
        proc = stack.pulumi("preview", "--policy-pack", str(PACK), "--diff=false", cwd=broken, stack="broken")
        assert proc.returncode == 0, _tail(proc)
        stack.pulumi("config", "rm", "hybridml:spec", cwd=broken, check=True, stack="broken")
        proc = stack.pulumi("preview", "--policy-pack", str(PACK), "--diff=false", cwd=broken, stack="broken")
        assert proc.returncode != 0 and "hybridml:spec" in proc.stdout + proc.stderr, _tail(proc)
    finally:
        stack.pulumi("config", "set", "hybridml:spec", "local", cwd=broken, check=True, stack="broken")


def test_crossguard_pack_lets_the_unbroken_control_through(stack, broken):
    stack.pulumi("config", "set", "variant", "none", cwd=broken, check=True, stack="broken")
    proc = stack.pulumi("preview", "--policy-pack", str(PACK), "--diff=false", cwd=broken, stack="broken")
    _require_policy_runtime(proc)
    assert proc.returncode == 0, _tail(proc)


def _assert_clean(apis, stack_objects_before: set) -> None:
    """Nothing Pulumi wrote is left in the clusters."""
    kinds = {k for _, k, _, _ in stack_objects_before}
    left = kube.pulumi_managed(apis, kinds)
    assert not left, f"left behind after destroy: {sorted(left)[:20]}"
    for site, api in apis.items():
        names = {n["metadata"]["name"] for n in kube.items(api, "/api/v1/namespaces")}
        assert names <= kube.LOCAL_STACK_NAMESPACES, (site, names)
        assert not kube.items(api, "/api/v1/persistentvolumes"), f"{site}: volumes left behind"


def test_destroy_removes_everything_it_created(stack, apis):
    before = stack.state_objects()
    proc = stack.pulumi("destroy", "--yes", "--skip-preview", stack="local", check=True)
    TIMINGS["pulumi destroy"] = proc.seconds
    assert _changes(proc.stdout).get("deleted", 0) >= len(before), _tail(proc)
    assert not stack.state_objects()
    kube.wait("namespaces and volumes to be gone", lambda: kube.gone(apis), timeout=120)
    _assert_clean(apis, before)


def _recover_pending(stack: Stack) -> int:
    """What scripts/pulumi_env.sh recover_pending does; returns the number of pending operations."""
    pending = stack.export()["deployment"].get("pending_operations") or []
    if pending:
        stack.pulumi("refresh", "--yes", "--skip-preview", "--clear-pending-creates", stack="local", check=True)
    return len(pending)


def test_interrupted_up_converges_without_orphans(stack, apis):
    """SIGINT while `pulumi up` creates the stack, then up again: converged, nothing orphaned."""
    cmd = ["pulumi", "up", "--yes", "--skip-preview", "--diff=false", "--non-interactive", "--stack", "local"]
    proc = subprocess.Popen(cmd, cwd=stack.project, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        created = 0
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:                 # interrupt once a good part is created
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if re.search(r"\bcreated \(", line):
                created += 1
            if created >= 40:
                proc.send_signal(signal.SIGINT)
                break
        assert created >= 40, "".join(lines[-50:])
        try:
            rest, _ = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:               # a second SIGINT stops it at once (pending operations)
            proc.send_signal(signal.SIGINT)
            rest, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0, "the interrupted update reported success"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pending = _recover_pending(stack)
    print(f"interrupted after {created} creates; {pending} pending operations cleared")
    stack.up()
    assert not kube.workloads_ready(apis)
    preview = stack.pulumi("preview", "--expect-no-changes", "--diff=false", stack="local")
    assert preview.returncode == 0, _tail(preview)
    state = stack.state_objects()
    managed = kube.pulumi_managed(apis, {k for _, k, _, _ in state})
    orphans = managed - state
    assert not orphans, f"objects in the clusters that the stack does not know: {sorted(orphans)[:20]}"


def test_final_destroy_leaves_the_clusters_as_local_up_made_them(stack, apis):
    before = stack.state_objects()
    stack.pulumi("destroy", "--yes", "--skip-preview", stack="local", check=True)
    kube.wait("namespaces and volumes to be gone", lambda: kube.gone(apis), timeout=120)
    _assert_clean(apis, before)


# --------------------------------------------------------------------------- sharded rollout (issue 8)


def _hybridml(stack: Stack, *args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess:
    env = {**stack.env, "HYBRIDML_PROJECT_DIR": str(stack.project), "COLUMNS": "200"}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hybridml.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    proc.seconds = time.monotonic() - t0  # type: ignore[attr-defined]
    return proc


def _rollout_json(proc) -> dict:
    start = proc.stdout.index("{")
    return json.loads(proc.stdout[start:])


SHARDS = tuple(f"local-{s}" for s in SITES)


def test_sharded_up_deploys_the_same_objects_as_the_single_stack(stack, apis):
    proc = _hybridml(stack, "up", "local", "--parallel", "2", "--json")
    TIMINGS["hybridml up local (sharded, from empty)"] = proc.seconds
    assert proc.returncode == 0, _tail(proc)
    result = _rollout_json(proc)
    names = [s["name"] for s in result["stacks"]]
    assert sorted(names[:-1]) == sorted(SHARDS) and names[-1] == "local-fleet", result   # sites biggest first
    assert all(s["state"] == "ok" for s in result["stacks"]), result
    kube.wait("every Deployment/StatefulSet ready, InferenceService Ready and pod Running",
              lambda: not kube.workloads_ready(apis) and not kube.serving_not_ready(apis), timeout=180)
    sharded = set().union(*(stack.state_objects(s) for s in (*SHARDS, "local-fleet")))
    # the shards' objects are disjoint, and together they are exactly what the single stack made
    per_stack = [stack.state_objects(s) for s in (*SHARDS, "local-fleet")]
    assert sum(len(o) for o in per_stack) == len(sharded)
    if MONOLITH.get("objects"):
        assert sharded == MONOLITH["objects"]
    # the fleet stack read the site stacks' outputs and published the directory on every cluster
    for _site, api in apis.items():
        cm = api.get("/api/v1/namespaces/hybridml-gateway/configmaps/hybridml-fleet-directory")
        directory = json.loads(cm["data"]["fleet.json"])
        assert set(directory["sites"]) == set(SITES), directory
        assert all(m["fleet_hostname"] for m in directory["sites"].values())
    digests = {stack.export(s)["deployment"]["resources"][0]["outputs"].get("plan_digest") for s in SHARDS}
    assert len(digests) == 1 and None not in digests


def test_sharded_noop_preview_and_one_site_up_by_hand(stack):
    proc = _hybridml(stack, "preview", "local", "--engine", "--expect-no-changes")
    TIMINGS["hybridml preview local --engine (no-op)"] = proc.seconds
    assert proc.returncode == 0, _tail(proc)
    # --skip-unchanged: every stack's inputs fingerprint (the fleet stack's with the site outputs it reads)
    # matches what its last update exported, so the engine runs for none
    proc = _hybridml(stack, "preview", "local", "--engine", "--skip-unchanged", "--expect-no-changes", "--json")
    TIMINGS["hybridml preview local --engine --skip-unchanged (no-op)"] = proc.seconds
    assert proc.returncode == 0, _tail(proc)
    runs = {s["name"]: s for s in _rollout_json(proc)["stacks"]}
    for name in (*SHARDS, "local-fleet"):
        assert "engine not run" in runs[name]["note"] and runs[name]["changes"]["same"] > 10, runs[name]
    # different inputs (the same plan, read from another file): the engine previews the site stacks again
    plan = stack.project / ".local" / "plans" / "local.json"
    moved = stack.root / "local-plan-copy.json"
    moved.write_bytes(plan.read_bytes())
    proc = _hybridml(stack, "preview", "local", "--engine", "--skip-unchanged", "--plan", str(moved), "--json")
    assert proc.returncode == 0, _tail(proc)
    assert not any(s["note"] for s in _rollout_json(proc)["stacks"]), _tail(proc)
    # a site stack is an ordinary stack: `pulumi up --stack local-aws-use1` works and changes nothing
    proc = stack.pulumi("up", "--yes", "--skip-preview", "--diff=false", stack="local-aws-use1", check=True)
    assert not _changes(proc.stdout), _tail(proc)


def test_sharded_destroy_leaves_the_clusters_clean(stack, apis):
    before = set().union(*(stack.state_objects(s) for s in (*SHARDS, "local-fleet")))
    proc = _hybridml(stack, "destroy", "local", "--json")
    TIMINGS["hybridml destroy local (sharded)"] = proc.seconds
    assert proc.returncode == 0, _tail(proc)
    states = [s["name"] for s in _rollout_json(proc)["stacks"]]
    assert states[0] == "local-fleet"
    kube.wait("namespaces and volumes to be gone", lambda: kube.gone(apis), timeout=120)
    _assert_clean(apis, before)


def _lock_files(stack: Stack) -> list[Path]:
    backend = Path(stack.env["PULUMI_BACKEND_URL"][len("file://"):])
    return sorted((backend / ".pulumi" / "locks").glob("*/*/local-*/*.json"))


@pytest.mark.parametrize("checkpoints", ["every-step", "final"])
def test_a_killed_rollout_resumes_without_orphans(stack, apis, checkpoints):
    """SIGKILL the whole `hybridml up local` (CLI, engines, programs) mid-way, then up again. The dead
    engines' locks stay and the state misses objects that exist (every-step: the creates in flight;
    final: everything). The next up clears the locks of the dead processes and pending operations,
    adopts the objects it finds and converges: nothing in the clusters that no stack knows."""
    env = {**stack.env, "HYBRIDML_PROJECT_DIR": str(stack.project), "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "hybridml.cli", "up", "local", "--parallel", "2", "--json",
                             "--checkpoints", checkpoints],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        created = 0
        while time.monotonic() < deadline and proc.poll() is None:
            created = len(kube.pulumi_managed(apis, {"Namespace", "ConfigMap", "Deployment", "Service"}))
            if created >= 12:
                break
            time.sleep(0.5)
        assert proc.poll() is None and created >= 12, f"rollout ended (rc {proc.returncode}) with {created} objects"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # The engines' plugins (language hosts, providers) run in process groups of their own: they
        # outlive a SIGKILL of the group, as after a real kill. They are still in the rollout's session.
        kube.kill_session(proc.pid)
    time.sleep(1)
    locks = _lock_files(stack)
    assert locks, "a killed engine leaves its lock behind (else this test tests nothing)"
    print(f"killed after {created} objects; {len(locks)} stale locks")

    state: set = set()
    try:
        proc = _hybridml(stack, "up", "local", "--parallel", "2", "--json", "--checkpoints", checkpoints)
        assert proc.returncode == 0, _tail(proc)
        result = _rollout_json(proc)
        assert result["checkpoints"] == checkpoints and all(s["state"] == "ok" for s in result["stacks"]), result
        assert not _lock_files(stack)
        kube.wait("every Deployment/StatefulSet ready, InferenceService Ready and pod Running",
                  lambda: not kube.workloads_ready(apis) and not kube.serving_not_ready(apis), timeout=180)
        state = set().union(*(stack.state_objects(s) for s in (*SHARDS, "local-fleet")))
        orphans = kube.pulumi_managed(apis, {k for _, k, _, _ in state}) - state
        assert not orphans, f"objects in the clusters that no stack knows: {sorted(orphans)[:20]}"
    finally:   # the next test starts from empty clusters whatever happened here
        proc = _hybridml(stack, "destroy", "local", "--json")
    assert proc.returncode == 0, _tail(proc)
    kube.wait("namespaces and volumes to be gone", lambda: kube.gone(apis), timeout=120)
    _assert_clean(apis, state)


def test_a_failing_site_does_not_stop_the_others(clusters, stack, apis):
    """From empty, with dc-local's API server down: aws-use1 still rolls out, dc-local fails with its
    error, the fleet stack is skipped naming it; once the cluster is back, destroy cleans up."""
    from hybridml.local.controlplane import up as cp_up
    from hybridml.local.paths import ClusterPaths
    from hybridml.local.processes import stop_process as _stop

    dc = [c for c in clusters["clusters"] if c.name == cluster_name("dc-local")]
    paths = ClusterPaths(clusters["state_dir"] / "clusters" / cluster_name("dc-local"))
    assert _stop(paths, "kube-apiserver")
    try:
        proc = _hybridml(stack, "up", "local", "--json", timeout=600)
        assert proc.returncode == 1, _tail(proc)
        states = {s["name"]: s for s in _rollout_json(proc)["stacks"]}
        assert states["local-aws-use1"]["state"] == "ok", states
        assert states["local-dc-local"]["state"] == "failed" and states["local-dc-local"]["error"], states
        assert states["local-fleet"]["state"] == "skipped", states
        assert "local-dc-local" in states["local-fleet"]["error"]
    finally:
        cp_up(dc, clusters["state_dir"], CRD_DIR)
    before = stack.state_objects("local-aws-use1")
    assert before
    proc = _hybridml(stack, "destroy", "local", "--json")
    assert proc.returncode == 0, _tail(proc)
    kube.wait("namespaces and volumes to be gone", lambda: kube.gone(apis), timeout=120)
    _assert_clean(apis, before)
