"""Render the serving stack of an environment under Pulumi mocks and collect every object it creates.

Fake ClusterHandles (one `pulumi_kubernetes.Provider` per used site) stand in for the cluster components;
the mock records each registered resource with the site its provider targets.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from clusters.handle import ClusterHandle
from infra.spec import CloudSite, Environment
from policies.placement.plan import PlacementPlan
from workloads.options import WorkloadOptions

SECRET_SIG = "4dabf18193072939515e22adb298388d"
TEST_SEED = "test-seed-not-secret"


@dataclass
class Obj:
    site: str
    type: str          # Pulumi type token
    name: str          # Pulumi resource name
    manifest: dict     # plain manifest (secrets unwrapped)
    parent_type: str = ""

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "")

    @property
    def api_version(self) -> str:
        return self.manifest.get("apiVersion", "")

    @property
    def namespace(self) -> str | None:
        return self.manifest.get("metadata", {}).get("namespace")

    @property
    def obj_name(self) -> str:
        return self.manifest.get("metadata", {}).get("name", "")

    def ref(self) -> str:
        return f"{self.site}/{self.kind}/{self.namespace or '-'}/{self.obj_name} ({self.name})"


@dataclass
class Rendered:
    env: Environment
    plan: PlacementPlan
    objects: list[Obj]
    components: list[tuple[str, str]]       # (type, name)
    other: list[tuple[str, str, dict]]      # non-manifest resources (Helm releases, providers)
    summary: dict
    seconds: float
    secrets_seen: list[str] = field(default_factory=list)

    def k8s(self, kind: str | None = None, site: str | None = None) -> list[Obj]:
        return [o for o in self.objects if (kind is None or o.kind == kind) and (site is None or o.site == site)]


def plain(value, secrets: list):
    """Unwrap Pulumi secret envelopes (remembering them) and turn integral floats back into ints."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270" and "value" in value:
            secrets.append("secret")
            return plain(value["value"], secrets)
        return {k: plain(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v, secrets) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.records: list[tuple[str, str, dict, str | None]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.records.append((args.typ, args.name, args.inputs, args.provider))
        return [f"{args.name}_id", {}]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def fake_clusters(env: Environment, plan: PlacementPlan, *, simulated: bool = False) -> dict[str, ClusterHandle]:
    out = {}
    for site in plan.used_sites():
        s = env.site(site)
        kind = "cloud" if isinstance(s, CloudSite) else "datacenter"
        tiers = [t.value for t in (s.privacy_tiers if isinstance(s, CloudSite) else s.allowed_tiers)]
        provider = k8s.Provider(f"k8s-{site}", kubeconfig="{}", namespace=None)
        out[site] = ClusterHandle(site=site, kind=kind, provider=provider, simulated=simulated,
                                  gpu_types=sorted(s.gpu_types) if isinstance(s, CloudSite) else [],
                                  privacy_tiers=tiers, ready=[])
    return out


def render(env: Environment, plan: PlacementPlan, *, simulated: bool = False,
           options: WorkloadOptions | None = None) -> Rendered:
    from workloads.stack import deploy_workloads

    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, project="hybridml", stack=env.name, preview=False)
    result: dict = {}
    opts = options or WorkloadOptions(secret_seed=TEST_SEED)

    @pulumi.runtime.test
    def run():
        clusters = fake_clusters(env, plan, simulated=simulated)
        result["summary"] = deploy_workloads(env, plan, clusters, options=opts)

    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    objects, components, other, secrets = [], [], [], []
    for typ, name, inputs, provider in mocks.records:
        if typ.startswith("hybridml:"):
            components.append((typ, name))
            continue
        if typ.startswith("pulumi:providers:") or typ == "kubernetes:helm.sh/v3:Release":
            other.append((typ, name, inputs))
            continue
        site = provider.split("::")[-2].removeprefix("k8s-") if provider else ""
        manifest = plain(inputs, secrets)
        objects.append(Obj(site, typ, name, manifest))
    return Rendered(env, plan, objects, components, other, result.get("summary", {}), seconds, secrets)
