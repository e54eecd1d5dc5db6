"""Checks that span the whole spec: names that must resolve, RTTs that must exist.

Pure: takes a parsed `Environment`, returns every problem found (never stops at
the first), each with the field path that points at the offending value.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import TypeVar

from infra.batch import check_batch
from infra.errors import SpecIssue
from infra.features import check_feature_views
from infra.objectives import check_quality
from infra.spec import MAX_RATE_RULES, CloudSite, Environment, PrivacyTier

Path = tuple[str | int, ...]
T = TypeVar("T")


def _duplicates(items: Iterable[T], key: Callable[[T], str]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        seen.setdefault(key(item), []).append(i)
    return {k: v for k, v in seen.items() if len(v) > 1}


def _did_you_mean(value: str, options: Collection[str]) -> str:
    import difflib

    close = difflib.get_close_matches(value, sorted(options), n=1)
    known = ", ".join(sorted(options)) if len(options) <= 8 else f"{len(options)} known names"
    return f" (did you mean {close[0]!r}? known: {known})" if close else f" (known: {known})"


def check_references(env: Environment) -> list[SpecIssue]:
    issues: list[SpecIssue] = []

    def add(path: Path, message: str) -> None:
        issues.append(SpecIssue(path=path, message=message))

    # ---- unique names
    for collection, label in [("user_regions", "user region"), ("sites", "site"), ("pipelines", "pipeline"),
                              ("feature_views", "feature view"), ("collections", "collection"),
                              ("tenants", "tenant")]:
        for name, idx in _duplicates(getattr(env, collection), lambda x: x.name).items():
            for i in idx[1:]:
                add((collection, i, "name"), f"duplicate {label} name {name!r} (first at {collection}[{idx[0]}])")

    regions = {r.name for r in env.user_regions}
    sites = {s.name for s in env.sites}
    pipelines = {p.name for p in env.pipelines}
    views = {v.name: v for v in env.feature_views}
    collections = {c.name: c for c in env.collections}
    gpu_types = env.gpu_types()
    widest = _widest_nodes(env)  # GPU type -> GPUs on the largest node offering it

    # ---- sites
    all_host_names: dict[str, Path] = {}
    for si, site in enumerate(env.sites):
        if isinstance(site, CloudSite):
            for name, idx in _duplicates(site.instance_types, lambda it: it.name).items():
                add(("sites", si, "instance_types", idx[1], "name"), f"duplicate instance type {name!r}")
            for zi, zone in enumerate(site.zones):
                if not zone.startswith(site.region):
                    add(("sites", si, "zones", zi), f"zone {zone!r} is not in region {site.region!r}")
        else:
            for name, idx in _duplicates(site.racks, lambda r: r.name).items():
                add(("sites", si, "racks", idx[1], "name"), f"duplicate rack {name!r} in datacenter {site.name!r}")
            for ri, rack in enumerate(site.racks):
                # addresses (and their overlaps) are infra.bounds' job; here the names, pools expanded
                owners: list[Path] = [("sites", si, "racks", ri, "hosts", hi, "name") for hi in range(len(rack.hosts))]
                for pi, pool in enumerate(rack.host_pools):
                    owners += [("sites", si, "racks", ri, "host_pools", pi, "name_prefix")] * pool.count
                reported: set[Path] = set()
                for path, host in zip(owners, rack.all_hosts(), strict=True):
                    if host.name in all_host_names:
                        if path not in reported:  # a pool's first clash is enough
                            reported.add(path)
                            add(path, f"duplicate host name {host.name!r} (also at {_fmt(all_host_names[host.name])})")
                    else:
                        all_host_names[host.name] = path
            if site.privacy_tiers is not None:
                top = max(r.privacy_zone.rank for r in site.racks)
                for ti, tier in enumerate(site.privacy_tiers):
                    if tier.rank > top:
                        add(("sites", si, "privacy_tiers", ti),
                            f"tier {tier.value!r} allowed but no rack of {site.name!r} has a privacy_zone that holds it")

    # ---- network
    net = env.network
    for region in env.user_regions:
        row = net.user_rtt_ms.get(region.name)
        if row is None:
            add(("network", "user_rtt_ms"), f"missing RTT row for user region {region.name!r}")
            continue
        for site in env.sites:
            if site.name not in row:
                add(("network", "user_rtt_ms", region.name), f"missing RTT from user region {region.name!r} to site {site.name!r}")
    for rname, row in net.user_rtt_ms.items():
        if rname not in regions:
            add(("network", "user_rtt_ms", rname), f"unknown user region {rname!r}" + _did_you_mean(rname, regions))
        for sname in row:
            if sname not in sites:
                add(("network", "user_rtt_ms", rname, sname), f"unknown site {sname!r}" + _did_you_mean(sname, sites))
    for a, row in net.site_rtt_ms.items():
        if a not in sites:
            add(("network", "site_rtt_ms", a), f"unknown site {a!r}" + _did_you_mean(a, sites))
        for b, ms in row.items():
            if b not in sites:
                add(("network", "site_rtt_ms", a, b), f"unknown site {b!r}" + _did_you_mean(b, sites))
            elif a == b:
                add(("network", "site_rtt_ms", a, b), "RTT of a site to itself is network.intra_site_rtt_ms")
            else:
                back = net.site_rtt_ms.get(b, {}).get(a)
                if back is not None and back != ms:
                    add(("network", "site_rtt_ms", a, b), f"RTT {a}->{b} is {ms} ms but {b}->{a} is {back} ms")
    names = [s.name for s in env.sites]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if b not in net.site_rtt_ms.get(a, {}) and a not in net.site_rtt_ms.get(b, {}):
                add(("network", "site_rtt_ms"), f"missing RTT between sites {a!r} and {b!r}")

    # ---- pipelines
    jurisdictions = {r.jurisdiction for r in env.user_regions} | {s.jurisdiction for s in env.sites}
    for pi, p in enumerate(env.pipelines):
        base: Path = ("pipelines", pi)
        for rname in p.demand_rps:
            if rname not in regions:
                add(base + ("demand_rps", rname), f"unknown user region {rname!r}" + _did_you_mean(rname, regions))
        if sum(p.demand_rps.values()) <= 0 and p.min_replicas == 0:
            add(base + ("demand_rps",), "no demand and min_replicas 0: the pipeline would never run")
        if p.gpu:
            if p.gpu.type not in gpu_types:
                add(base + ("resources", "gpu", "type"),
                    f"GPU type {p.gpu.type!r} is offered by no site" + _did_you_mean(p.gpu.type, gpu_types))
        if p.engine.kind == "vllm":
            if not p.gpu:
                add(base + ("resources", "gpu"), "a vllm pipeline needs a GPU request")
            elif p.gpu.count != p.engine.tensor_parallel * p.engine.pipeline_parallel:
                add(base + ("resources", "gpu", "count"),
                    f"GPU count {p.gpu.count} must equal tensor_parallel x pipeline_parallel "
                    f"({p.engine.tensor_parallel} x {p.engine.pipeline_parallel})")
            tp, largest = p.engine.tensor_parallel, widest.get(p.gpu.type, 0) if p.gpu else 0
            if p.gpu and 0 < largest < tp and not p.engine.allow_cross_node_tensor_parallel:
                add(base + ("engine", "tensor_parallel"),
                    f"tensor_parallel {tp} exceeds the {largest} {p.gpu.type} GPUs of the largest node offering them: "
                    f"tensor parallelism would cross nodes; split across nodes with pipeline_parallel instead "
                    f"(e.g. {_split_hint(p.gpu.count, largest)}), or set engine.allow_cross_node_tensor_parallel: true")
        if p.engine.kind == "cpu" and p.gpu:
            add(base + ("resources", "gpu"), "a cpu pipeline must not request GPUs (use engine vllm or triton)")
        if p.engine.kind == "cpu" and (":" not in p.engine.image.rsplit("/", 1)[-1] and "@" not in p.engine.image):
            add(base + ("engine", "image"), f"image {p.engine.image!r} has no tag or digest")
        elif p.engine.kind == "cpu" and p.engine.image.endswith(":latest"):
            add(base + ("engine", "image"), f"image {p.engine.image!r} uses the mutable tag 'latest'")
        for di, dep in enumerate(p.dependencies):
            if dep.feature_view and dep.feature_view not in views:
                add(base + ("dependencies", di, "feature_view"),
                    f"unknown feature view {dep.feature_view!r}" + _did_you_mean(dep.feature_view, views))
            if dep.collection and dep.collection not in collections:
                add(base + ("dependencies", di, "collection"),
                    f"unknown collection {dep.collection!r}" + _did_you_mean(dep.collection, collections))
            data = views.get(dep.feature_view or "") or collections.get(dep.collection or "")
            if dep.downgrade is not None and data is not None and PrivacyTier(dep.downgrade.to).rank >= data.privacy_tier.rank:
                add(base + ("dependencies", di, "downgrade", "to"),
                    f"downgrade to {dep.downgrade.to!r} is not below the {data.privacy_tier.value} tier of {dep.kind} "
                    f"{dep.target!r}: a downgrade lowers the tier the reads count at (name a lower tier, or drop it)")
        if p.variants:
            total = sum(v.weight for v in p.variants)
            if total != 100:
                add(base + ("variants",), f"variant weights sum to {total}, not 100")
            for name, idx in _duplicates(p.variants, lambda v: v.name).items():
                add(base + ("variants", idx[1], "name"), f"duplicate variant {name!r}")
        if p.shadow:
            if p.shadow.target not in pipelines:
                add(base + ("shadow", "target"), f"unknown pipeline {p.shadow.target!r}" + _did_you_mean(p.shadow.target, pipelines))
            elif p.shadow.target == p.name:
                add(base + ("shadow", "target"), "a pipeline cannot shadow itself")
            elif env.pipeline(p.shadow.target).engine.kind != p.engine.kind:
                add(base + ("shadow", "target"), f"shadow target {p.shadow.target!r} runs a different engine")
        for qpath, message in check_quality(p):
            add(base + qpath, message)
        for si, sname in enumerate(p.pinned_sites or []):
            if sname not in sites:
                add(base + ("pinned_sites", si), f"unknown site {sname!r}" + _did_you_mean(sname, sites))
        for ji, j in enumerate(p.allowed_jurisdictions or []):
            if j not in jurisdictions:
                add(base + ("allowed_jurisdictions", ji), f"unknown jurisdiction {j!r}" + _did_you_mean(j, jurisdictions))
        if p.spread.min_sites > len(env.sites):
            add(base + ("spread", "min_sites"), f"min_sites {p.spread.min_sites} exceeds the {len(env.sites)} sites")

    # ---- feature views: columns, one meaning per entity, rows that fit Redis (infra/features.py)
    for fpath, message in check_feature_views(env.feature_views):
        add(fpath, message)

    # ---- batch pipelines: GPUs, engines, jurisdictions, spot prices (infra/batch.py)
    for bpath, message in check_batch(env):
        add(bpath, message)

    # ---- tenants
    for ti, tenant in enumerate(env.tenants):
        for name, idx in _duplicates(tenant.budgets, lambda b: b.pipeline).items():
            add(("tenants", ti, "budgets", idx[1], "pipeline"), f"duplicate budget for pipeline {name!r}")
        for bi, budget in enumerate(tenant.budgets):
            if budget.pipeline not in pipelines:
                add(("tenants", ti, "budgets", bi, "pipeline"),
                    f"unknown pipeline {budget.pipeline!r}" + _did_you_mean(budget.pipeline, pipelines))
            elif not env.pipeline(budget.pipeline).is_llm:
                add(("tenants", ti, "budgets", bi, "pipeline"),
                    f"token budgets apply to LLM (vllm) pipelines; {budget.pipeline!r} is not one")

    allowed: list[int] = []      # the first MAX_RATE_RULES distinct rates, in spec order
    for ti, tenant in enumerate(env.tenants):
        rate = tenant.requests_per_second
        if rate in allowed:
            continue
        if len(allowed) < MAX_RATE_RULES:
            allowed.append(rate)
            continue
        add(("tenants", ti, "requests_per_second"),
            f"{rate}: more than {MAX_RATE_RULES} distinct requests_per_second among tenants (one Envoy Gateway local "
            f"rate-limit rule each, at most {MAX_RATE_RULES}); give this tenant one of {sorted(allowed)}")

    # ---- the same GPU type name must mean one device everywhere
    memory: dict[str, set[float]] = {}
    for site in env.sites:
        shapes = [it.gpu for it in site.instance_types if it.gpu] if isinstance(site, CloudSite) else \
            [h.gpu for _, h in site.all_hosts() if h.gpu]
        for shape in shapes:
            memory.setdefault(shape.type, set()).add(shape.memory_gib)
    for gtype, mems in sorted(memory.items()):
        if len(mems) > 1:
            add(("sites",), f"GPU type {gtype!r} has different memory sizes across sites: {sorted(mems)} GiB")

    return issues


def _widest_nodes(env: Environment) -> dict[str, int]:
    """GPU type -> GPUs on the largest node (cloud instance type or datacenter host) that offers it."""
    out: dict[str, int] = {}
    for site in env.sites:
        shapes = [it.gpu for it in site.instance_types if it.gpu] if isinstance(site, CloudSite) else \
            [h.gpu for _, h in site.all_hosts() if h.gpu]
        for shape in shapes:
            out[shape.type] = max(out.get(shape.type, 0), shape.count)
    return out


def _split_hint(gpus: int, per_node: int) -> str:
    """tensor_parallel within one node x pipeline_parallel across nodes, for `gpus` GPUs in all."""
    tp = max(d for d in range(1, per_node + 1) if gpus % d == 0)
    return f"tensor_parallel: {tp}, pipeline_parallel: {gpus // tp}"


def _fmt(path: Path) -> str:
    return SpecIssue(path=path, message="").dotted_path

