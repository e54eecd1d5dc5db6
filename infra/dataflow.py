"""Privacy follows the data: the tier a pipeline runs at is the tier of everything that flows into it.

A pipeline's **effective tier** is the highest of
- its own `privacy_tier` (what it declares),
- the tier of every feature view and collection it reads (`dependencies`), unless that dependency declares a
  `downgrade` (`{to, reason}`: the reads carry less, e.g. aggregated counts), in which case it counts at `to`,
- the effective tier of every pipeline that shadows it: mirrored requests carry the source's data.

Placement keeps a pipeline on sites allowed its effective tier (and, when that tier is pii/restricted, its
requests in their jurisdiction); its pods are pinned to that tier's home zone; the policy rules
`data-flow-tier` and `mirror-target-tier` check a plan against the flows. Pure: spec in, tiers out.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from infra.spec import Environment, Pipeline, PrivacyTier

Path = tuple[str | int, ...]

SHADOW = "shadow"


def _an(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


@dataclass(frozen=True)
class DataFlow:
    """Data of `tier` flowing into pipeline `reader`: a dependency it reads, or the requests a shadow mirrors to it."""

    reader: str
    kind: str                       # feature_view | collection | shadow
    source: str                     # the data piece, or (shadow) the pipeline whose requests are mirrored
    tier: PrivacyTier               # the data's own tier (shadow: the source's effective tier)
    counts_as: PrivacyTier          # what the reader holds: `tier`, or the declared downgrade's `to`
    path: Path                      # the spec field that makes the flow (file:line via the loader)
    downgrade_reason: str | None = None

    @property
    def is_shadow(self) -> bool:
        return self.kind == SHADOW

    @property
    def field(self) -> str:
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
        return out

    def describe(self) -> str:
        """`reads pii feature_view 'user-history'`, `mirrored pii requests from 'x' (shadow)`."""
        if self.is_shadow:
            return f"mirrored {self.tier.value} requests from {self.source!r} (shadow)"
        text = f"reads {self.tier.value} {self.kind} {self.source!r}"
        if self.downgrade_reason is not None:
            text += f", counted {self.counts_as.value} by its declared downgrade ({self.downgrade_reason})"
        return text

    def refusal(self, allowed: Iterable[PrivacyTier]) -> str:
        """Why a site holding only `allowed` may not run the reader: names the flow and the way out."""
        lower = [t for t in allowed if t.rank < self.counts_as.rank]
        if self.is_shadow:
            return f"data flow: {self.describe()}; shadow a target placed where {self.tier.value} may be held"
        where = f" from {_an(max(lower, key=lambda t: t.rank).value)} site" if lower else ""
        return f"data flow: {self.describe()} (declare a downgrade to read it{where})"


@dataclass(frozen=True)
class PipelineTier:
    """A pipeline's declared and effective tier, and the flows that make the difference."""

    name: str
    declared: PrivacyTier
    effective: PrivacyTier
    flows: tuple[DataFlow, ...]     # every flow into the pipeline, downgraded ones included

    @property
    def raised(self) -> bool:
        return self.effective.rank > self.declared.rank

    @property
    def raised_by(self) -> tuple[DataFlow, ...]:
        """The flows that set the effective tier above the declared one (empty when not raised)."""
        return tuple(f for f in self.flows if self.raised and f.counts_as == self.effective)

    def refusals(self, allowed: Iterable[PrivacyTier]) -> list[str]:
        """Why a site holding `allowed` may not run this pipeline because of what flows into it."""
        tiers = set(allowed)
        return [f.refusal(tiers) for f in self.flows if f.counts_as not in tiers]

    def because(self) -> str:
        """`pii by data flow: reads pii feature_view 'x' (pipelines[3].dependencies[0])`, or '' when not raised."""
        if not self.raised:
            return ""
        return f"{self.effective.value} by data flow: " + "; ".join(f"{f.describe()} ({f.field})" for f in self.raised_by)


@dataclass(frozen=True)
class DataFlows:
    tiers: dict[str, PipelineTier]

    @property
    def flows(self) -> list[DataFlow]:
        return [f for t in self.tiers.values() for f in t.flows]

    @property
    def raised(self) -> list[PipelineTier]:
        return [t for t in self.tiers.values() if t.raised]


def data_tiers(env: Environment) -> dict[tuple[str, str], PrivacyTier]:
    """(kind, name) -> tier of every feature view and collection."""
    out = {("feature_view", v.name): v.privacy_tier for v in env.feature_views}
    out.update({("collection", c.name): c.privacy_tier for c in env.collections})
    return out


def _compute(env: Environment) -> DataFlows:
    data = data_tiers(env)
    reads: dict[str, list[DataFlow]] = {p.name: [] for p in env.pipelines}
    for i, p in enumerate(env.pipelines):
        for j, dep in enumerate(p.dependencies):
            tier = data.get((dep.kind, dep.target))
            if tier is None:
                continue    # an unknown name: infra.references reports it
            to = PrivacyTier(dep.downgrade.to) if dep.downgrade is not None else tier
            down = dep.downgrade if to.rank < tier.rank else None      # (one not below the data: a spec error)
            reads[p.name].append(DataFlow(p.name, dep.kind, dep.target, tier, to if down else tier,
                                          ("pipelines", i, "dependencies", j), down.reason if down else None))
    effective = {p.name: max([p.privacy_tier, *(f.counts_as for f in reads[p.name])], key=lambda t: t.rank)
                 for p in env.pipelines}
    shadows = [(i, p.name, p.shadow.target) for i, p in enumerate(env.pipelines)
               if p.shadow is not None and p.shadow.target in effective and p.shadow.target != p.name]
    changed = True
    while changed:              # chains and circles of shadows: tiers only rise, so this ends
        changed = False
        for _, source, target in shadows:
            if effective[source].rank > effective[target].rank:
                effective[target] = effective[source]
                changed = True
    for i, source, target in shadows:
        tier = effective[source]
        reads[target].append(DataFlow(target, SHADOW, source, tier, tier, ("pipelines", i, "shadow", "target")))
    return DataFlows({p.name: PipelineTier(p.name, p.privacy_tier, effective[p.name], tuple(reads[p.name]))
                      for p in env.pipelines})


_MEMO: dict[int, tuple[Environment, DataFlows]] = {}


def data_flows(env: Environment) -> DataFlows:
    """Every data flow of the spec and each pipeline's effective tier (memoised per spec object: specs are frozen)."""
    hit = _MEMO.get(id(env))
    if hit is not None and hit[0] is env:
        return hit[1]
    if len(_MEMO) > 64:
        _MEMO.clear()
    value = _compute(env)
    _MEMO[id(env)] = (env, value)
    return value


def pipeline_tier(env: Environment, p: Pipeline | str) -> PipelineTier:
    return data_flows(env).tiers[p if isinstance(p, str) else p.name]


def effective_tier(env: Environment, p: Pipeline | str) -> PrivacyTier:
    """The tier `p` runs at: its own, raised by what it reads and by the requests mirrored to it."""
    return pipeline_tier(env, p).effective
