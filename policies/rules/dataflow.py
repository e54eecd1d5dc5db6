"""Privacy follows the data: a plan may not put a reader, or a shadow's target, where the data it receives may not be.

The flows and effective tiers are infra.dataflow's (the placement's own): every feature view or collection a
pipeline reads (at its declared `downgrade` tier, where there is one) and every shadow's mirrored requests.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from infra.dataflow import data_flows
from policies.rules.base import Context, Enforcement, ResourceView, Rule, Severity, SiteFacts


def _placed(ctx: Context) -> dict[str, list[str]]:
    """pipeline -> sites the plan gives replicas (pipelines the spec knows)."""
    if ctx.plan is None or ctx.env is None:
        return {}
    known = data_flows(ctx.env).tiers
    return {pp.name: sorted(pp.replicas) for pp in ctx.plan.pipelines if pp.name in known}


def flows_checked(ctx: Context) -> tuple[int, int]:
    """(data flows of the spec, flow x reader-site pairs the two rules check against the plan)."""
    placed = _placed(ctx)
    if ctx.env is None:
        return 0, 0
    flows = data_flows(ctx.env).flows
    return len(flows), sum(len(placed.get(f.reader, [])) for f in flows)


def _off_tier(ctx: Context, shadows: bool) -> Iterator[tuple[str, str, Any, SiteFacts]]:
    """(pipeline, site, flow, site facts) for each placed replica's site that may not hold the flow's tier: reads
    (judged at the tier they count as, after a downgrade) or mirrored requests (the source's tier)."""
    for name, sites in _placed(ctx).items():
        flows = [f for f in data_flows(ctx.env).tiers[name].flows if f.is_shadow == shadows]
        for site in sites:
            facts = ctx.sites.get(site)
            if facts is None:
                continue
            for f in flows:
                if (f.tier if shadows else f.counts_as).value not in facts.privacy_tiers:
                    yield name, site, f, facts


def data_flow_tier(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    """Every replica of a reader is on a site allowed the tier of every dependency it reads (less declared downgrades)."""
    for name, site, f, facts in _off_tier(ctx, shadows=False):
        yield (f"pipeline {name}", f"{f.describe()} ({f.field}) but runs on {facts.kind} site {site}, "
                                   f"which holds only {', '.join(facts.privacy_tiers)}")


def mirror_target_tier(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    """A shadow's target runs only on sites allowed the tier of the requests mirrored to it (the source's tier)."""
    for name, site, f, facts in _off_tier(ctx, shadows=True):
        yield (f"pipeline {name}", f"receives {f.describe()} ({f.field}) on {facts.kind} site {site}, "
                                   f"which holds only {', '.join(facts.privacy_tiers)}")


RULES = [
    Rule("data-flow-tier", "Every pipeline runs only on sites allowed the tier of every feature view and collection it "
         "reads (a dependency's declared downgrade counts at its `to`).", Severity.critical, Enforcement.mandatory,
         "re-run placement (hybridml plan): it keeps a reader on sites allowed its data's tier; where the reads carry "
         "less (aggregates), declare it on the dependency: downgrade: {to: <tier>, reason: ...}",
         stack_check=data_flow_tier, group="placement"),
    Rule("mirror-target-tier", "A shadow's target runs only on sites allowed the tier of the requests mirrored to it.",
         Severity.critical, Enforcement.mandatory,
         "re-run placement (hybridml plan): the target runs at its source's tier; or shadow a target placed where "
         "the source's tier may be held", stack_check=mirror_target_tier, group="placement"),
]
