"""One version per operator (infra/versions.py): every apiVersion/kind the program writes is served by the
CRDs of the release pinned for it, the charts the program installs are those releases, and the gateway's
proxies run where the NetworkPolicies expect them."""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from infra.labels import GATEWAY_NAMESPACE
from infra.loader import load_environment
from infra.versions import OPERATORS, release_for_group
from tests.conftest import REPO
from tests.workloads import schemas
from tests.workloads.schemas import CRD_DIR
from workloads.images import Charts

CORE_GROUPS = {"", "apps", "batch", "policy", "rbac.authorization.k8s.io", "networking.k8s.io", "autoscaling",
               "scheduling.k8s.io", "storage.k8s.io", "coordination.k8s.io", "admissionregistration.k8s.io"}


@cache
def _served() -> dict[tuple[str, str], dict[str, set[str]]]:
    """(group, kind) -> CRD file -> versions served, over every CRD file in shared/crds (and more/)."""
    out: dict[tuple[str, str], dict[str, set[str]]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")) + sorted((CRD_DIR / "more").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            served = {v["name"] for v in spec["versions"] if v.get("served")}
            out.setdefault((spec["group"], spec["names"]["kind"]), {})[path.name] = served
    return out


def _readme_commits() -> dict[str, str]:
    rows = re.findall(r"^\| (\S+\.yaml) \| \S+ \| \S+ \| ([0-9a-f]{40}) \|$", (CRD_DIR / "README.md").read_text(), re.M)
    return {Path(f).name: commit for f, commit in rows}


def _written(stack) -> set[tuple[str, str]]:
    return {(o.api_version, o.kind) for o in stack.objects if o.api_version}


@pytest.mark.parametrize("name", ["local", "dev", "prod"])
def test_every_custom_kind_written_is_served_by_its_pinned_release(name, request):
    stack = request.getfixturevalue(f"{name}_stack")
    problems = []
    for api_version, kind in sorted(_written(stack)):
        group, _, version = api_version.rpartition("/")
        if group in CORE_GROUPS or group.endswith(".k8s.io") and group not in {"gateway.networking.k8s.io",
                                                                                 "inference.networking.k8s.io",
                                                                                 "leaderworkerset.x-k8s.io"}:
            continue
        release = release_for_group(group)
        if release is None:
            problems.append(f"{api_version} {kind}: no operator of infra/versions.py serves group {group}")
            continue
        files = {f: v for f, v in _served().get((group, kind), {}).items() if f.startswith(release.crd_files)}
        if not files:
            problems.append(f"{api_version} {kind}: {release.name}'s CRDs ({', '.join(release.crd_files)}*) have no {kind}")
        elif not any(version in v for v in files.values()):
            problems.append(f"{api_version} {kind}: {release.name} {release.version or '(prerequisite)'} serves only "
                            f"{sorted(set().union(*files.values()))}")
    assert problems == [], "\n".join(problems)


def test_the_crds_kept_are_those_of_the_pinned_release():
    """Where a row names the upstream commit of its CRDs, shared/crds/README.md lists that commit for every
    file of the release: a pin moved without its CRDs (or the reverse) fails here."""
    commits = _readme_commits()
    assert commits, "shared/crds/README.md lists no files"
    for release in OPERATORS.values():
        for prefix in release.crd_files:
            files = {f: c for f, c in commits.items() if f.startswith(prefix)}
            assert files, f"{release.name}: no CRD files {prefix}* in shared/crds"
            if release.crd_commit is not None:
                assert set(files.values()) == {release.crd_commit}, (release.name, files)
        if release.installed_by_program:
            assert release.version and (release.chart or release.manifest) and release.namespace, release.name
            assert (release.version in release.manifest) if release.manifest else True, release.name
        else:
            assert release.note.startswith("prerequisite") or release.groups, release.name


def test_the_program_installs_the_pinned_charts(dev_stack):
    releases = {props.get("name"): props for t, _, props in dev_stack.other if t == "kubernetes:helm.sh/v3:Release"}
    charts = Charts()
    for role, chart in (("envoy-gateway", charts.envoy_gateway), ("ai-gateway-crds", charts.ai_gateway_crds),
                        ("ai-gateway", charts.ai_gateway)):
        assert role in releases, sorted(releases)
        assert releases[role]["version"] == OPERATORS[role].version == chart.version
        assert releases[role]["chart"] == OPERATORS[role].chart
    # the AI gateway release serves the v1beta1 kinds the program writes (v0.5 served only v1alpha1)
    assert OPERATORS["ai-gateway"].version == OPERATORS["ai-gateway-crds"].version


def test_proxies_run_where_the_network_policies_admit_them(dev_stack):
    """Envoy Gateway runs in gateway-namespace mode, so its proxies are in the Gateways' namespace; the
    model namespaces admit serving traffic from that namespace."""
    release = next(props for t, _, props in dev_stack.other
                   if t == "kubernetes:helm.sh/v3:Release" and props.get("name") == "envoy-gateway")
    provider = release["values"]["config"]["envoyGateway"]["provider"]
    assert provider["kubernetes"]["deploy"]["type"] == "GatewayNamespace"
    gateway_namespaces = {o.namespace for o in dev_stack.k8s("Gateway")}
    assert gateway_namespaces == {GATEWAY_NAMESPACE}
    admitted = set()
    for np in dev_stack.k8s("NetworkPolicy"):
        if not (np.namespace or "").startswith("ml-") or np.obj_name != "allow-gateway-to-model-servers":
            continue
        for rule in np.manifest["spec"].get("ingress") or []:
            for peer in rule.get("from") or []:
                for expr in (peer.get("namespaceSelector") or {}).get("matchExpressions") or []:
                    admitted |= set(expr.get("values") or [])
    assert GATEWAY_NAMESPACE in admitted and OPERATORS["envoy-gateway"].namespace not in admitted


# --------------------------------------------------------------------------- who installs each kind, per site


def _custom(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return "." in group and (not group.endswith(".k8s.io") or group in {
        "gateway.networking.k8s.io", "inference.networking.k8s.io", "leaderworkerset.x-k8s.io"})


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_every_kind_has_its_controller_installed_or_named_as_a_prerequisite(name):
    """Through the real program under mocks: on a cloud site, every custom kind written there has its operator
    installed there by the program (a Helm release or release manifest of the pinned version, on that cluster); on
    a datacenter, its operator is installed there by the program too or is a prerequisite README "Prerequisites"
    names with its version (and `hybridml preflight` checks, tests/e2e/test_preflight_datacenter.py)."""
    from tests.pulumi_mocks import preview

    result = preview(name)
    env = load_environment(name)
    readme = (REPO / "README.md").read_text().split("## Prerequisites", 1)[1].split("\n## ", 1)[0]
    installs: dict[str, set[str]] = {}
    for r in result.resources:
        site = result.cluster_of(r)
        if r.type == "kubernetes:helm.sh/v3:Release":
            assert r.props["version"] == OPERATORS[r.props["name"]].version, r.urn
            installs.setdefault(site, set()).add(r.props["name"])
        elif r.type == "kubernetes:yaml/v2:ConfigFile":
            row = next(o for o in OPERATORS.values() if o.manifest == r.props["file"])
            installs.setdefault(site, set()).add(row.name)
    problems, seen = [], {"cloud": set(), "datacenter": set()}
    for site, manifests in result.kubernetes_manifests().items():
        kind = env.site(site).kind
        for m in manifests:
            if not _custom(m.get("apiVersion", "")):
                continue
            group = m["apiVersion"].rpartition("/")[0]
            row = release_for_group(group)
            if row is None:
                problems.append(f"{site}: {m['apiVersion']} {m['kind']}: no operator of infra/versions.py")
                continue
            seen[kind].add(row.name)
            if kind == "cloud" and row.name not in installs.get(site, set()):
                problems.append(f"{site} (cloud): {m['apiVersion']} {m['kind']}: {row.name} is not installed there")
            elif kind == "datacenter" and row.name not in installs.get(site, set()):
                if row.on_datacenters:
                    problems.append(f"{site}: {m['kind']}: {row.name} should come with the program, it does not")
                elif f"{row.name} {row.operator_version}" not in readme:
                    problems.append(f"{site}: {m['kind']}: README Prerequisites does not name `{row.name} "
                                    f"{row.operator_version}`")
    assert problems == [], "\n".join(sorted(set(problems))[:30])
    assert {"keda", "kserve", "prometheus-operator", "cert-manager", "envoy-gateway"} <= seen["cloud"], seen
    assert seen["datacenter"] - {o.name for o in OPERATORS.values() if o.on_datacenters}, seen   # some prerequisites


# --------------------------------------------------------------------------- against each release's own CRDs


def _module_dir(source: str) -> Path | None:
    """The folder of `<module>@<version>/<dir>` in the Go module cache, downloaded first when `go` is there."""
    module, _, rest = source.partition("@")
    version, _, sub = rest.partition("/")
    cache = Path(os.environ.get("HYBRIDML_CACHE") or Path.home() / ".cache" / "hybridml") / "go" / "mod"
    escaped = re.sub(r"[A-Z]", lambda m: "!" + m.group(0).lower(), module)
    path = cache / f"{escaped}@{version}" / sub
    if not path.is_dir():
        go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
        if go is None:
            return None
        env = {**os.environ, "GOMODCACHE": str(cache), "GOFLAGS": "-mod=mod"}
        subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"], env=env, cwd=cache.parent,
                       capture_output=True, timeout=600, check=False)
    return path if path.is_dir() else None


def _release_schemas(folder: Path, kinds: set[str] | None = None) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema of the CRDs under `folder`; with `kinds`, only files that may define them
    (named after one of them, or bundles named `*crds*`): the Prometheus operator's folder holds 10 MB of others."""
    stems = {k.lower()[:-1] for k in kinds or ()}
    out = {}
    for path in sorted(folder.rglob("*.yaml")):
        if kinds is not None and "crds" not in path.name and not any(stem in path.name for stem in stems):
            continue
        try:
            docs = list(yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        except yaml.YAMLError:      # a Helm template, not a manifest
            continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            for v in doc["spec"]["versions"]:
                if v.get("served", True):
                    schema = schemas.convert(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
                    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                    out[(f"{doc['spec']['group']}/{v['name']}", doc["spec"]["names"]["kind"])] = schema
    return out


SOURCED = sorted(o.name for o in OPERATORS.values() if o.crd_source)


@pytest.mark.parametrize("operator", SOURCED)
def test_what_the_program_writes_validates_against_the_pinned_releases_own_crds(operator, dev_stack, prod_stack):
    """shared/crds may hold a later commit than the release the program installs: every object of the release's
    kinds (dev and prod) must validate against the CRDs in the pinned release's own Go module."""
    from tests.conftest import require

    release = OPERATORS[operator]
    folder = _module_dir(release.crd_source or "")
    require(folder is not None, f"{release.crd_source} is not in the Go module cache and `go` cannot fetch it")
    assert folder is not None
    written = [o for stack in (dev_stack, prod_stack) for o in stack.objects
               if o.api_version.rpartition("/")[0] in release.groups]
    index = _release_schemas(folder, {o.kind for o in written})
    problems, checked = [], 0
    for o in written:
        key = (o.api_version, o.kind)
        if key not in index:
            problems.append(f"{o.ref()}: {release.name} {release.operator_version} serves no {o.api_version} {o.kind}")
            continue
        checked += 1
        for e in list(jsonschema.Draft7Validator(index[key]).iter_errors(o.manifest))[:3]:
            problems.append(f"{o.ref()}: {'.'.join(map(str, e.absolute_path))}: {e.message[-200:]}")
    assert problems == [], "\n".join(problems[:20])
    assert checked or operator in ("lws",), f"no object of {release.name}'s kinds is written in dev or prod"


def test_the_local_stack_builds_the_kserve_the_program_installs():
    pins = dict(line.split("=", 1) for line in (REPO / "scripts" / "toolchain" / "versions.env").read_text().splitlines()
                if line and not line.startswith("#"))
    assert f"v{pins['KSERVE_VERSION']}" == OPERATORS["kserve"].version == OPERATORS["kserve-crd"].version
    assert OPERATORS["kserve"].crd_source and OPERATORS["kserve"].version in OPERATORS["kserve"].crd_source
