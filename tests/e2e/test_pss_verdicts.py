"""Our Pod Security rules (policies/rules/pod_security.py) against the official verdicts: the PodSecurity
admission of a real kube-apiserver (the Go-built 1.36, `restricted` profile, version latest).

One small local cluster (no CRDs); a namespace labelled `pod-security.kubernetes.io/enforce=restricted`;
every fixture pod is created with a server-side dry run. The API server admits (201) or rejects it
(403, "violates PodSecurity"); `policies.rules.evaluate` over the same pod must agree: no finding when
admitted, at least one finding when rejected. A fixture the API server refuses for another reason (422:
invalid pod) is a broken fixture and fails the test.

Known disagreements (the rule is wrong, see KNOWN_WRONG) xfail once the API server's verdict is confirmed,
and fail the day the rule is fixed, so the entry gets removed. Needs the toolchain; outside CI it skips when missing.
"""
from __future__ import annotations

import copy
import json
import time

import pytest

from hybridml.local.controlplane import api_client, down, up
from hybridml.local.kubeapi import KubeAPIError
from hybridml.local.nodes import ClusterDef, NodeDef
from hybridml.local.toolchain import find_binaries, kwok_stage_files
from infra.errors import ToolchainMissing
from policies.rules import ALL_RULES, Context, ResourceView, evaluate
from tests.conftest import require

pytestmark = pytest.mark.e2e

NAMESPACE = "pss-restricted"
PSS_RULES = [r for r in ALL_RULES if r.group == "pod-security"]
TIMINGS: dict[str, float] = {}


def _container(**sc) -> dict:
    base = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    base.update(sc)
    return {"name": "app", "image": "registry.invalid/app:1.0.0", "securityContext": base}


def _pod(*, pod_sc: dict | None = None, containers: list[dict] | None = None, **spec) -> dict:
    sc = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}} if pod_sc is None else pod_sc
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fixture", "namespace": NAMESPACE},
            "spec": {"securityContext": sc, "containers": containers or [_container()], **spec}}


def _with(pod: dict, fn) -> dict:
    pod = copy.deepcopy(pod)
    fn(pod)
    return pod


BASE = _pod()
C = lambda pod: pod["spec"]["containers"][0]  # noqa: E731 - the fixture's only container

# name -> (pod, expected to be admitted by the official restricted profile)
FIXTURES: dict[str, tuple[dict, bool]] = {
    # ---- compliant variants
    "ok-pod-level-settings": (BASE, True),
    "ok-container-level-settings": (_pod(pod_sc={}, containers=[_container(
        runAsNonRoot=True, seccompProfile={"type": "RuntimeDefault"})]), True),
    "ok-init-container-compliant": (_with(BASE, lambda p: p["spec"].update(
        initContainers=[{**_container(), "name": "init"}])), True),
    "ok-add-net-bind-service": (_with(BASE, lambda p: C(p)["securityContext"]["capabilities"].update(
        add=["NET_BIND_SERVICE"])), True),
    "ok-seccomp-localhost": (_pod(pod_sc={"runAsNonRoot": True, "seccompProfile": {
        "type": "Localhost", "localhostProfile": "profiles/app.json"}}), True),
    "ok-explicit-user-selinux-apparmor": (_pod(pod_sc={
        "runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"},
        "seLinuxOptions": {"type": "container_t"}, "appArmorProfile": {"type": "RuntimeDefault"}}), True),
    "ok-safe-sysctl": (_with(BASE, lambda p: p["spec"]["securityContext"].update(
        sysctls=[{"name": "net.ipv4.ip_local_port_range", "value": "1024 65535"}])), True),
    "ok-sysctl-added-in-1.32": (_with(BASE, lambda p: p["spec"]["securityContext"].update(
        sysctls=[{"name": "net.ipv4.tcp_rmem", "value": "4096 87380 6291456"}])), True),
    "ok-restricted-volume-types": (_with(BASE, lambda p: p["spec"].update(volumes=[
        {"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "tmp", "emptyDir": {}},
        {"name": "sec", "secret": {"secretName": "s"}}, {"name": "data", "persistentVolumeClaim": {"claimName": "d"}},
        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}])), True),
    "ok-windows-pod-exempt-from-linux-checks": (_pod(
        pod_sc={"runAsNonRoot": True}, containers=[{"name": "app", "image": "registry.invalid/app:1.0.0"}],
        os={"name": "windows"}), True),
    # ---- one violation each
    "bad-host-network": (_with(BASE, lambda p: p["spec"].update(hostNetwork=True)), False),
    "bad-host-pid": (_with(BASE, lambda p: p["spec"].update(hostPID=True)), False),
    "bad-host-ipc": (_with(BASE, lambda p: p["spec"].update(hostIPC=True)), False),
    "bad-privileged": (_with(BASE, lambda p: C(p)["securityContext"].update(
        privileged=True, allowPrivilegeEscalation=True)), False),
    "bad-add-sys-admin": (_with(BASE, lambda p: C(p)["securityContext"]["capabilities"].update(
        add=["SYS_ADMIN"])), False),
    "bad-no-drop-all": (_with(BASE, lambda p: C(p)["securityContext"].update(
        capabilities={"drop": ["NET_RAW"]})), False),
    "bad-drop-all-lowercase": (_with(BASE, lambda p: C(p)["securityContext"].update(
        capabilities={"drop": ["all"]})), False),
    "bad-host-path-volume": (_with(BASE, lambda p: p["spec"].update(
        volumes=[{"name": "h", "hostPath": {"path": "/etc"}}])), False),
    "bad-host-port": (_with(BASE, lambda p: C(p).update(ports=[{"containerPort": 8080, "hostPort": 8080}])), False),
    "bad-apparmor-unconfined": (_with(BASE, lambda p: C(p)["securityContext"].update(
        appArmorProfile={"type": "Unconfined"})), False),
    "bad-selinux-type": (_with(BASE, lambda p: p["spec"]["securityContext"].update(
        seLinuxOptions={"type": "spc_t"})), False),
    "bad-proc-mount-unmasked": (_with(BASE, lambda p: (p["spec"].update(hostUsers=False),
                                                        C(p)["securityContext"].update(procMount="Unmasked"))), False),
    # safe from Kubernetes 1.37 on (PSS v1.37): the 1.36 API server here still rejects them, and so do our
    # rules judged at the server's version; at 1.37 they pass (tests/policies/test_pss_versions.py)
    "bad-sysctl-safe-only-from-1.37": (_with(BASE, lambda p: p["spec"]["securityContext"].update(
        sysctls=[{"name": "net.ipv4.tcp_notsent_lowat", "value": "16384"}])), False),
    "bad-unsafe-sysctl": (_with(BASE, lambda p: p["spec"]["securityContext"].update(
        sysctls=[{"name": "kernel.msgmax", "value": "65536"}])), False),
    "bad-privilege-escalation-unset": (_with(BASE, lambda p: C(p)["securityContext"].pop(
        "allowPrivilegeEscalation")), False),
    "bad-init-container-escalation-unset": (_with(BASE, lambda p: p["spec"].update(initContainers=[
        {"name": "init", "image": "registry.invalid/app:1.0.0",
         "securityContext": {"capabilities": {"drop": ["ALL"]}}}])), False),
    "bad-container-run-as-non-root-false": (_with(BASE, lambda p: C(p)["securityContext"].update(
        runAsNonRoot=False)), False),
    "bad-run-as-non-root-unset": (_pod(pod_sc={"seccompProfile": {"type": "RuntimeDefault"}}), False),
    "bad-run-as-user-0": (_with(BASE, lambda p: C(p)["securityContext"].update(runAsUser=0)), False),
    "bad-seccomp-unconfined": (_with(BASE, lambda p: p["spec"]["securityContext"].update(
        seccompProfile={"type": "Unconfined"})), False),
    "bad-seccomp-unset": (_pod(pod_sc={"runAsNonRoot": True}), False),
    "bad-probe-host": (_with(BASE, lambda p: C(p).update(readinessProbe={
        "httpGet": {"host": "169.254.169.254", "path": "/", "port": 80}})), False),
}

# Fixtures on which our rule is wrong (the API server's verdict is the reference).
KNOWN_WRONG: dict[str, str] = {}  # fixture name -> which rule is wrong and how (none today)


def _require_toolchain() -> None:
    try:
        find_binaries()
        kwok_stage_files()
    except ToolchainMissing as exc:
        require(False, f"the local toolchain is missing ({exc})")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    _require_toolchain()
    state_dir = tmp_path_factory.mktemp("pss-cluster")
    node = NodeDef(name="pss-node", capacity={"cpu": "8", "memory": "32Gi", "pods": "110"})
    t0 = time.monotonic()
    try:
        up([ClusterDef(name="pss", nodes=[node])], state_dir, crd_dir=None)
    except BaseException:
        down(state_dir)
        raise
    TIMINGS["cluster up"] = time.monotonic() - t0
    client = api_client("pss", state_dir)
    client.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                      "pod-security.kubernetes.io/enforce-version": "latest"}}})
    yield client
    client.close()
    down(state_dir)


def api_verdict(api, pod: dict) -> tuple[bool, str]:
    """(admitted, message) from a server-side dry-run create."""
    status, body = api.request_raw("POST", f"/api/v1/namespaces/{NAMESPACE}/pods",
                                   json.dumps(pod).encode(), params={"dryRun": "All"})
    text = body.decode(errors="replace")
    if status in (200, 201):
        return True, ""
    message = json.loads(text).get("message", text) if text.startswith("{") else text
    if status == 403 and "violates PodSecurity" in message:
        return False, message
    raise AssertionError(f"fixture is not a valid pod (HTTP {status}): {message}")


SERVER_VERSION: tuple[int, int] = (1, 36)   # the Go-built kube-apiserver (scripts/toolchain/versions.env); checked below


def rules_verdict(pod: dict) -> tuple[bool, list[str]]:
    """Our verdict at the server's Pod Security level ("latest" = the server's own minor)."""
    findings = evaluate(PSS_RULES, [ResourceView("kubernetes:core/v1:Pod", pod["metadata"]["name"], pod)],
                        Context(pss_version=SERVER_VERSION))
    return not findings, [f"{f.rule}: {f.message}" for f in findings]


@pytest.mark.parametrize("name", list(FIXTURES))
def test_rules_agree_with_the_api_servers_pod_security_admission(api, name):
    pod, expected = FIXTURES[name]
    admitted, message = api_verdict(api, pod)
    assert admitted == expected, f"fixture {name}: the API server {'admits' if admitted else 'rejects'} it " \
                                 f"({message}); fix the fixture's expectation"
    ours, findings = rules_verdict(pod)
    if name in KNOWN_WRONG:
        if ours != admitted:
            pytest.xfail(f"known wrong rule: {KNOWN_WRONG[name]}")
        pytest.fail(f"{name}: our rules now agree with the API server: remove it from KNOWN_WRONG")
    assert ours == admitted, (f"{name}: API server {'admits' if admitted else 'rejects'} ({message or 'ok'}), "
                              f"our rules say {findings or 'ok'}")


def test_every_restricted_control_is_violated_by_some_fixture():
    """Coverage of the fixtures: every rule of ours is triggered by at least one rejected fixture."""
    triggered = set()
    for _name, (pod, expected) in FIXTURES.items():
        if expected is False:
            triggered |= {f.split(":")[0] for f in rules_verdict(pod)[1]}
    assert {r.name for r in PSS_RULES} <= triggered, {r.name for r in PSS_RULES} - triggered


def test_the_server_is_the_version_our_verdicts_assume(api):
    info = api.get("/version")
    assert (int(info["major"]), int(info["minor"].rstrip("+"))) == SERVER_VERSION, info


def test_rejections_name_the_violated_control(api):
    """The API server's message names the control, as our finding does (spot check)."""
    _, message = api_verdict(api, FIXTURES["bad-host-network"][0])
    assert "host namespaces" in message
    _, findings = rules_verdict(FIXTURES["bad-host-network"][0])
    assert any(f.startswith("pss-host-namespaces") for f in findings)
    with pytest.raises(KubeAPIError):
        api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/fixture")   # dry runs persist nothing
