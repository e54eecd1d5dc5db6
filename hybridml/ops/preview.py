"""Offline preview: the real program (`hybridml.program.main`) under Pulumi's mock runtime.

No CLI, no engine, no credentials: the stack config is set in-process exactly as `pulumi` would
pass it, and a mock monitor answers every resource registration (inputs become outputs, plus
plausible ids/ARNs/endpoints for the AWS resources the program reads outputs of). The resources
are the ones the program creates, through the same code path; only the transport differs.

Speed (issue 3 asks >= 1,000 resources/s for prod): the stock mock monitor deserialises and
re-serialises every registration in a worker thread, and the SDK captures a Python stack trace
per resource for the engine's source positions. Neither affects which resources are built, so
the preview (1) answers registrations with no properties, which outside a dry run the SDK resolves
from the resource's own inputs (inputs as outputs, no round trip), decoding the request to Python
only for the objects it reports or writes, (2) skips the source-position stack capture, (3) runs
the monitor calls inline instead of on a thread pool, (4) pauses Python's cyclic garbage collector
while the program runs: the SDK keeps every resource's futures alive until the end, so each
generational pass rescans a growing heap (~65 MB per 1,000 resources, collected right after), and
(5) serialises plain inputs without the SDK's coroutine per value (hybridml/ops/preview_fastpath.py).
The sharded layout runs its stacks in worker processes (hybridml/ops/preview_shards.py).
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import gc
import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.proto import resource_pb2

from hybridml.ops import preview_fastpath
from hybridml.stack.config import MODE, PLAN, SECRET_SEED, SITES, SPEC, onprem_kubeconfig_key

PROJECT = "hybridml"
ORGANIZATION = "organization"   # what a DIY (self-managed) backend calls every stack's organization
ACCOUNT = "123456789012"
PREVIEW_KUBECONFIG = "preview-placeholder-kubeconfig"   # stands in for on-prem secrets; never a real credential
SECRET_SIG = "4dabf18193072939515e22adb298388d"          # Pulumi's marker of a secret value in the wire format


# --------------------------------------------------------------------------- recorded resources


@dataclass
class Recorded:
    """One registered resource: what a policy check or a YAML writer needs."""

    type: str
    name: str
    urn: str
    id: str
    provider: str          # provider reference "urn::id" ('' for default providers)
    custom: bool
    parent: str
    dependencies: tuple[str, ...] = ()    # URNs this resource waits for (depends_on and inputs' resources)
    _struct: Any = field(repr=False, default=None)
    _props: dict | None = field(repr=False, default=None)

    @property
    def props(self) -> dict:
        """Input properties as plain Python (decoded lazily: most resources are only counted)."""
        if self._props is None:
            self._props = _struct_to_plain(self._struct) if self._struct is not None else {}
        return self._props

    @property
    def provider_urn(self) -> str:
        return self.provider.rsplit("::", 1)[0]   # a provider reference is "<urn>::<id>"

    @property
    def is_kubernetes_object(self) -> bool:
        return (self.type.startswith("kubernetes:") and self.custom
                and not self.type.startswith("kubernetes:helm.sh/"))


def _struct_to_plain(struct) -> dict:
    """Protobuf Struct -> dict, with Pulumi secrets unwrapped to their value (they are redacted on output)."""
    from google.protobuf import json_format

    return _unwrap(json_format.MessageToDict(struct))


def _unwrap(value):
    """Secrets to their value, integral floats back to ints (Struct numbers are doubles), keys sorted
    (Struct maps have no order; sorted keys keep the written YAML stable across runs)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":   # a secret
            return _unwrap(value.get("value"))
        return {k: _unwrap(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --------------------------------------------------------------------------- mocks


def _fake_id(name: str, prefix: str) -> str:
    return f"{prefix}-{hashlib.sha1(name.encode()).hexdigest()[:17]}"


class HybridmlMocks(pulumi.runtime.Mocks):
    """Outputs for the AWS resources whose outputs the program reads; everything else: inputs.

    Used as is by tests that run components under the stock mock monitor; the preview's
    RecordingMonitor calls `aws_outputs` directly.
    """

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        rid, extra = aws_outputs(args.typ, args.name, args.inputs)
        return rid, {**args.inputs, **extra}

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def aws_outputs(typ: str, name: str, inputs: dict) -> tuple[str, dict]:
    """(id, outputs beyond the inputs) of a mocked resource: plausible ids, ARNs and endpoints."""
    region = "us-east-1"
    if typ == "aws:eks/cluster:Cluster":
        cname = inputs.get("name") or name
        return cname, {
            "arn": f"arn:aws:eks:{region}:{ACCOUNT}:cluster/{cname}",
            "endpoint": f"https://{hashlib.md5(cname.encode()).hexdigest().upper()}.gr7.{region}.eks.amazonaws.com",
            "certificateAuthority": {"data": base64.b64encode(b"preview-ca").decode()},
            "vpcConfig": {**(inputs.get("vpcConfig") or {}), "clusterSecurityGroupId": _fake_id(cname, "sg"),
                          "vpcId": _fake_id(cname, "vpc")},
            "status": "ACTIVE"}
    if typ == "aws:iam/role:Role":
        return name, {"arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "name": name}
    if typ == "aws:kms/key:Key":
        kid = _fake_id(name, "key")
        return kid, {"arn": f"arn:aws:kms:{region}:{ACCOUNT}:key/{kid}", "keyId": kid}
    if typ == "aws:sqs/queue:Queue":
        qname = inputs.get("name") or name
        url = f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/{qname}"
        return url, {"arn": f"arn:aws:sqs:{region}:{ACCOUNT}:{qname}", "url": url, "name": qname}
    if typ == "aws:ec2/eip:Eip":
        alloc = _fake_id(name, "eipalloc")
        return alloc, {"allocationId": alloc, "publicIp": "192.0.2.1"}
    if typ == "aws:ec2/launchTemplate:LaunchTemplate":
        return _fake_id(name, "lt"), {"latestVersion": 1}
    if typ == "aws:cloudwatch/eventRule:EventRule":
        return name, {"name": inputs.get("name") or name}
    prefix = {"aws:ec2/vpc:Vpc": "vpc", "aws:ec2/subnet:Subnet": "subnet", "aws:ec2/securityGroup:SecurityGroup": "sg",
              "aws:ec2/natGateway:NatGateway": "nat", "aws:ec2/routeTable:RouteTable": "rtb",
              "aws:ec2/internetGateway:InternetGateway": "igw"}.get(typ)
    if prefix:
        return _fake_id(name, prefix), {}
    if typ.startswith("aws:") and "arn" not in inputs:
        return f"{name}-id", {"arn": f"arn:aws:{typ.split(':')[1].split('/')[0]}:{region}:{ACCOUNT}:{name}"}
    return f"{name}-id", {}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A mock monitor that answers with the request's own property struct (inputs as outputs).

    Everything is synchronous: no decode/encode round trip through the SDK's async serialiser
    (which, called from inside the running loop, would re-enter it). AWS resources get their
    extra outputs merged into a copy of the struct.
    """

    def __init__(self, mocks: pulumi.runtime.Mocks, stack_outputs: dict[str, tuple[dict, list[str]]] | None = None):
        super().__init__(mocks)
        self.recorded: list[Recorded] = []
        # "<org>/<project>/<stack>" -> (outputs, secret output names): what a StackReference reads
        self.stack_outputs = stack_outputs or {}

    def ReadResource(self, request):
        if request.type != "pulumi:pulumi:StackReference":
            return super().ReadResource(request)
        from google.protobuf import struct_pb2

        urn = self.make_urn(request.parent, request.type, request.name)
        target = request.id
        if target not in self.stack_outputs:
            raise pulumi.RunError(f"stack reference {target!r}: no such stack was previewed "
                                  f"(previewed: {', '.join(sorted(self.stack_outputs)) or 'none'})")
        outputs, secret_names = self.stack_outputs[target]
        state = struct_pb2.Struct()
        state.update({"name": target, "outputs": outputs, "secretOutputNames": list(secret_names)})
        self.recorded.append(Recorded(type=request.type, name=request.name, urn=urn, id=target,
                                      provider=request.provider, custom=True, parent=request.parent,
                                      dependencies=tuple(request.dependencies), _struct=request.properties))
        return resource_pb2.ReadResourceResponse(urn=urn, properties=state)

    def RegisterResource(self, request):
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return resource_pb2.RegisterResourceResponse(urn=urn)
        # No properties in the answer: outside a dry run the SDK then resolves every output from the
        # resource's own inputs, which is "inputs as outputs" without encoding the inputs once more.
        obj = None
        rid = ""
        if request.custom:
            if request.type.startswith("aws:"):
                from google.protobuf import json_format, struct_pb2

                rid, extra = aws_outputs(request.type, request.name, json_format.MessageToDict(request.object))
                if extra:
                    obj = struct_pb2.Struct()
                    obj.CopyFrom(request.object)
                    obj.update(extra)
            else:
                rid = f"{request.name}-id"
        self.recorded.append(Recorded(type=request.type, name=request.name, urn=urn, id=rid,
                                      provider=request.provider, custom=request.custom, parent=request.parent,
                                      dependencies=tuple(request.dependencies), _struct=request.object))
        if obj is None:
            return resource_pb2.RegisterResourceResponse(urn=urn, id=rid)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=rid, object=obj)


_P = ParamSpec("_P")
_T = TypeVar("_T")


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs the SDK's monitor calls on the calling thread: the mock monitor needs no thread."""

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> concurrent.futures.Future[_T]:
        fut: concurrent.futures.Future[_T] = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            fut.set_exception(exc)
        return fut


# --------------------------------------------------------------------------- running the program


@dataclass
class PreviewResult:
    environment: str
    stack: str
    sites: list[str]
    resources: list[Recorded]
    cluster_of_provider: dict[str, str]      # provider URN -> site
    build_seconds: float                      # program body, spec load/solve excluded (wall clock)
    total_seconds: float
    plan_seconds: float
    workloads_deployed: bool
    build_cpu_seconds: float = 0.0            # the same phase in CPU time: independent of other load
    build_started_at: float = 0.0             # the build's start as wall-clock time (time.time)
    exports: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.resources)

    @property
    def resources_per_second(self) -> float:
        return self.count / self.build_seconds if self.build_seconds else float("inf")

    @property
    def resources_per_cpu_second(self) -> float:
        return self.count / self.build_cpu_seconds if self.build_cpu_seconds else float("inf")

    def cluster_of(self, r: Recorded) -> str | None:
        """The site whose cluster a resource targets: its provider's, else its nearest cluster component."""
        if r.provider:
            site = self.cluster_of_provider.get(r.provider_urn)
            if site:
                return site
        return self._component_site.get(r.parent) if r.parent else None

    @property
    def _component_site(self) -> dict[str, str]:
        cache = getattr(self, "_cs", None)
        if cache is None:
            by_urn = {r.urn: r for r in self.resources}
            cache = {}
            for r in self.resources:
                cur: Recorded | None = r
                site: str | None = None
                while cur is not None:
                    if cur.type.startswith("hybridml:clusters:") and cur.name in self.sites:
                        site = cur.name
                        break
                    cur = by_urn.get(cur.parent)
                if site:
                    cache[r.urn] = site
            self._cs = cache
        return cache

    def counts(self) -> dict[str, Counter]:
        """site -> resource type -> count. A component without a provider (e.g. a workloads component)
        counts for the site of its descendants; '(stack)' holds what belongs to no single cluster."""
        site_of: dict[str, str | None] = {r.urn: self.cluster_of(r) for r in self.resources}
        children: dict[str, list[str]] = defaultdict(list)
        for r in self.resources:
            children[r.parent].append(r.urn)

        def below(urn: str) -> str | None:
            sites: set[str] = set()
            todo = list(children.get(urn, []))
            while todo and len(sites) < 2:
                u = todo.pop()
                site = site_of.get(u)
                if site:
                    sites.add(site)
                else:
                    todo.extend(children.get(u, []))
            return sites.pop() if len(sites) == 1 else None

        out: dict[str, Counter] = defaultdict(Counter)
        for r in self.resources:
            site = site_of[r.urn] or (below(r.urn) if not r.custom else None)
            out[site or "(stack)"][r.type] += 1
        return out

    def kubernetes_manifests(self, *, redact: bool = True) -> dict[str, list[dict]]:
        """site -> every Kubernetes object as a manifest (Secret data redacted unless `redact` is False: the local
        data path serves the Secrets the program renders, e.g. the tenants' API keys)."""
        return {site: [_object_manifest(r, redact=redact) for r in objs] for site, objs in self.kubernetes_objects().items()}

    def kubernetes_objects(self) -> dict[str, list[Recorded]]:
        out: dict[str, list[Recorded]] = defaultdict(list)
        for r in self.resources:
            if r.is_kubernetes_object and not r.type.startswith("pulumi:providers:"):
                out[self.cluster_of(r) or "(unknown)"].append(r)
        return out


def stack_config(spec: str, mode: str = "cloud", sites: list[str] | None = None, plan_file: str | None = None,
                 extra: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """The config `pulumi` would hand the program, with placeholder secrets for on-prem kubeconfigs."""
    import json

    from infra.loader import load_environment

    cfg = {SPEC: spec, MODE: mode}
    if sites:
        cfg[SITES] = json.dumps(sites)
    if plan_file:
        cfg[PLAN] = plan_file
    secret_keys = []
    if mode == "cloud":
        # workloads/ derives the serving stack's credentials from this seed (a stack secret in real stacks)
        cfg[SECRET_SEED] = "preview-placeholder-seed"
        secret_keys.append(SECRET_SEED)
        for dc in load_environment(spec).datacenters:
            key = onprem_kubeconfig_key(dc.name)
            cfg[key] = PREVIEW_KUBECONFIG
            secret_keys.append(key)
    cfg.update(extra or {})
    return cfg, secret_keys


def run_preview(spec: str, *, mode: str = "cloud", sites: list[str] | None = None, plan_file: str | None = None,
                stack: str | None = None, config: dict[str, str] | None = None,
                stack_outputs: dict[str, tuple[dict, list[str]]] | None = None,
                fast_paths: bool = True) -> PreviewResult:
    """Run `hybridml.program.main()` under mocks and return every registered resource.

    `fast_paths=False` runs the SDK's serialiser unpatched (hybridml/ops/preview_fastpath.py), for
    the tests that show both give the same requests.

    Resets Pulumi's process-global runtime state first, so it can run several times in one process.
    """
    from pulumi.runtime import config as runtime_config
    from pulumi.runtime import resource as runtime_resource
    from pulumi.runtime import settings as runtime_settings
    from pulumi.runtime.proto import source_pb2
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from hybridml import program

    program.import_components()   # once per process; the clock below starts after
    t0 = time.perf_counter()
    cfg, secret_keys = stack_config(spec, mode, sites, plan_file, config)
    stack_name = stack or f"preview-{Path(spec).stem}"

    # Fresh runtime: root stack, outputs and config of an earlier run in this process are dropped.
    runtime_settings.SETTINGS.rpc_manager.clear()
    runtime_settings.SETTINGS.outputs.clear()
    runtime_settings.set_root_resource(None)  # type: ignore[arg-type]
    runtime_config.set_all_config(cfg, secret_keys)

    monitor = RecordingMonitor(HybridmlMocks(), stack_outputs)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.set_default_executor(_InlineExecutor(max_workers=1))
    empty_trace = source_pb2.StackTrace()
    original_trace = runtime_resource._get_stack_trace
    runtime_resource._get_stack_trace = lambda: empty_trace   # source positions: for the engine only
    timings: dict[str, float] = {}
    result_box: dict[str, Any] = {}

    original_load_plan = program.load_plan

    def timed_load_plan(env, plan_file):
        t = time.perf_counter()
        try:
            return original_load_plan(env, plan_file)
        finally:
            timings["plan"] = time.perf_counter() - t
            timings["build_start"] = time.perf_counter()
            timings["build_started_at"] = time.time()
            timings["build_cpu_start"] = time.process_time()

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        program.load_plan = timed_load_plan
        pulumi.runtime.set_mocks(HybridmlMocks(), project=PROJECT, stack=stack_name, preview=False, monitor=monitor,
                                 organization=ORGANIZATION)

        def body():
            result_box["result"] = program.main()

        with preview_fastpath.patched() if fast_paths else contextlib.nullcontext():
            _sync_await(run_pulumi_func(body))
    finally:
        program.load_plan = original_load_plan
        runtime_resource._get_stack_trace = original_trace
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
        t_end = time.perf_counter()
        cpu_end = time.process_time()
        if gc_was_enabled:
            gc.enable()

    result: program.ProgramResult = result_box["result"]
    cluster_of_provider: dict[str, str] = {}
    providers = {**{site: h.provider for site, h in result.handles.items()}, **result.referenced_providers}
    for site, provider in providers.items():
        # a registered provider's URN is always known (future() is typed Optional for unknowns in previews)
        cluster_of_provider[cast(str, _sync_await(provider.urn.future()))] = site
    exports = dict(getattr(runtime_settings.get_root_resource(), "outputs", {}) or {})
    return PreviewResult(
        environment=result.env.name, stack=stack_name, sites=list(result.sites), resources=monitor.recorded,
        cluster_of_provider=cluster_of_provider,
        build_seconds=t_end - timings.get("build_start", t0), total_seconds=t_end - t0,
        plan_seconds=timings.get("plan", 0.0), workloads_deployed=result.workloads is not None,
        build_cpu_seconds=cpu_end - timings.get("build_cpu_start", cpu_end),
        build_started_at=timings.get("build_started_at", 0.0),
        exports={k: v for k, v in exports.items()})


def resolved_exports(result: PreviewResult, names: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """The named stack exports as plain values, and which of them are secret (what a StackReference to
    this stack would read). Call right after `run_preview`, while its event loop is current."""
    from pulumi.runtime.sync_await import _sync_await

    values: dict[str, Any] = {}
    secret: list[str] = []
    for name in names:
        if name not in result.exports:
            continue
        output = pulumi.Output.from_input(result.exports[name])
        values[name] = _sync_await(output.future())
        if _sync_await(output.is_secret()):
            secret.append(name)
    return values, secret


# --------------------------------------------------------------------------- YAML output


def write_manifests(manifests: dict[str, list[dict]], out_dir: Path) -> dict[str, int]:
    """One multi-document file per cluster (`DIR/<site>.yaml`), objects sorted by kind/namespace/name.
    Returns site -> object count."""
    import yaml

    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for site, docs in sorted(manifests.items()):
        ordered = sorted(docs, key=lambda d: (d.get("kind") or "", (d.get("metadata") or {}).get("namespace") or "",
                                              (d.get("metadata") or {}).get("name") or ""))
        with (out_dir / f"{site}.yaml").open("w") as fh:
            # libyaml's emitter where PyYAML has it: the pure-Python one takes seconds per thousand objects
            yaml.dump_all(ordered, fh, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, width=120)
        written[site] = len(ordered)
    return written


def write_kubernetes_yaml(result: PreviewResult, out_dir: Path) -> dict[str, int]:
    """`write_manifests` of one stack's preview (Secret data redacted)."""
    return write_manifests(result.kubernetes_manifests(), out_dir)


def _object_manifest(r: Recorded, *, redact: bool = True) -> dict:
    props = dict(r.props)
    api_version = props.pop("apiVersion", None)
    kind = props.pop("kind", None)
    if not api_version or not kind:
        # typed resources carry both in their type token: kubernetes:apps/v1:Deployment
        _, group_version, kind = r.type.split(":")
        group, _, version = group_version.rpartition("/")
        api_version = version if group in ("core", "") else f"{group}/{version}"
    doc = {"apiVersion": api_version, "kind": kind}
    for key in ("metadata", "spec"):
        if key in props:
            doc[key] = props.pop(key)
    doc.update(props)
    if kind == "Secret" and redact:
        for key in ("data", "stringData"):
            if key in doc:
                doc[key] = {k: "<redacted>" for k in doc[key]}
    return doc
