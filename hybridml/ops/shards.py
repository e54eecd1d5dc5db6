"""How an environment splits into Pulumi stacks (issue 8). Pure: no Pulumi, no I/O.

One monolithic stack of prod is thousands of objects over seven clusters, and the Pulumi engine's
cost grows faster than linearly with a stack's size (every step rewrites the whole checkpoint). So an
environment deploys as:

* one **site stack** per site the plan uses, ``<env>-<site>``: that site's cluster and its share of
  the serving stack (the program with ``hybridml:sites: [<site>]``). Site stacks do not depend on one
  another: everything crossing sites (routes, peer hostnames, CIDRs) derives from the shared plan.
* one **fleet stack**, ``<env>-fleet`` (``hybridml:role: fleet``): reads every site stack's outputs by
  stack reference, checks they were all deployed from the same plan, and publishes the fleet
  directory (every site's gateway hostnames) onto every cluster. It runs after the site stacks and
  is destroyed before them.

Every stack's config derives from the environment's own stack config (``Pulumi.<env>.yaml``),
secrets included, plus the shard keys below; the solved plan is one file all shards read
(``hybridml:plan``), so no shard solves again and all agree.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from hybridml.stack.config import PLAN, ROLE, SHARD_KEYS, SITE_STACKS, SITES, ConfigEntry, compact_json
from infra.errors import HybridmlError

FLEET = "fleet"
Action = Literal["up", "preview", "destroy"]
CHECKPOINT_CHOICES = ("auto", "every-step", "final")
# Resource operations in flight per stack. The CLI's default is 4 per CPU core (8 on a 2-core runner), but a
# Kubernetes object's step is mostly waiting for the cluster (a Deployment until its pods are ready, 30-50 s on
# the busy sim clusters), so at 8 a 1,200-object datacenter stack crawled at ~1 object/s.
DEFAULT_RESOURCE_PARALLEL = 64
DEFAULT_RETRIES = 1   # runs of a stack again after a transient API-server error (transient_error)
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class StackSpec:
    """One stack of a sharded environment: its name, what it builds and its own config keys."""

    name: str
    role: Literal["site", "fleet", "environment"]
    sites: tuple[str, ...]
    config: dict[str, ConfigEntry] = field(default_factory=dict)
    after: tuple[str, ...] = ()       # stacks that must be up before this one (stack references)


def site_stack_name(environment: str, site: str) -> str:
    return f"{environment}-{site}"


def fleet_stack_name(environment: str) -> str:
    return f"{environment}-{FLEET}"


class ShardError(HybridmlError):
    """A sharding request that cannot be honoured (unknown site, bad stack name); exit 2."""

    exit_code = 2


def select(used_sites: list[str], all_sites: list[str], requested: list[str] | None) -> list[str]:
    """Site stacks to act on: the requested ones (must be sites of the environment), else every used site."""
    if not requested:
        return list(used_sites)
    unknown = [s for s in requested if s not in all_sites]
    if unknown:
        raise ShardError(f"--sites: no site {', '.join(repr(s) for s in unknown)} in the environment "
                         f"(sites: {', '.join(all_sites)})")
    return [s for s in all_sites if s in set(requested)]


def stack_specs(environment: str, used_sites: list[str], selected: list[str], plan_path: str,
                base_config: dict[str, ConfigEntry], *, with_fleet: bool = True) -> list[StackSpec]:
    """The stacks of a rollout, in dependency order: the selected site stacks, then the fleet stack.

    The fleet stack references every *used* site's stack (not only the selected ones): a partial
    rollout (`--sites`) refreshes the directory from what the other sites last deployed.
    """
    for s in [*used_sites, *selected]:
        if not _STACK_NAME.match(site_stack_name(environment, s)):
            raise ShardError(f"site {s!r}: {site_stack_name(environment, s)!r} is not a valid Pulumi stack name")
    if FLEET in used_sites:
        raise ShardError(f"a site may not be called {FLEET!r}: the fleet stack is named {fleet_stack_name(environment)}")
    base = {k: v for k, v in base_config.items() if k not in SHARD_KEYS}
    plan = {PLAN: ConfigEntry(plan_path)}
    specs = [StackSpec(name=site_stack_name(environment, s), role="site", sites=(s,),
                       config={**base, **plan, SITES: ConfigEntry(compact_json([s]))})
             for s in selected]
    if with_fleet:
        refs = {s: site_stack_name(environment, s) for s in used_sites}
        specs.append(StackSpec(
            name=fleet_stack_name(environment), role="fleet", sites=tuple(used_sites),
            config={**base, **plan, ROLE: ConfigEntry(FLEET), SITE_STACKS: ConfigEntry(compact_json(refs))},
            after=tuple(refs[s] for s in used_sites)))
    return specs


def whole_stack_spec(environment: str) -> StackSpec:
    """The environment's own stack (``<env>``, Pulumi.<env>.yaml) holding every site: the monolithic
    layout, for small environments and for measuring what sharding buys. Its config is the user's
    file, left untouched (no config to set: the program solves the same deterministic plan itself)."""
    return StackSpec(name=environment, role="environment", sites=(), config={})


def waves(specs: list[StackSpec], action: Action) -> list[list[StackSpec]]:
    """Groups of stacks that may run in parallel, in order. up/preview: dependencies first;
    destroy: dependents first (the fleet stack goes before the site stacks it references)."""
    names = {s.name for s in specs}
    remaining = list(specs)
    done: set[str] = set()
    out: list[list[StackSpec]] = []
    while remaining:
        ready = [s for s in remaining if all(a in done or a not in names for a in s.after)]
        if not ready:
            raise ShardError("stack dependencies form a cycle: " + ", ".join(s.name for s in remaining))
        out.append(ready)
        done.update(s.name for s in ready)
        remaining = [s for s in remaining if s.name not in done]
    return list(reversed(out)) if action == "destroy" else out


def largest_first(specs: list[StackSpec], site_sizes: dict[str, int]) -> list[StackSpec]:
    """Stacks ordered by how much they deploy (the plan's pipelines and data pieces on their sites),
    biggest first, so that with fewer slots than stacks the longest ones start at once instead of
    being left for last (longest-processing-time first); waves() keeps this order within a wave."""
    return sorted(specs, key=lambda s: -sum(site_sizes.get(site, 0) for site in s.sites) if s.role == "site" else 0)


def blocked_by(spec: StackSpec, failed: set[str]) -> list[str]:
    """The failed stacks this one depends on (it is skipped, with them named, rather than run)."""
    return [a for a in spec.after if a in failed]


def checkpoint_mode(requested: str) -> Literal["every-step", "final"]:
    """How often the engine writes a stack's state during an update.

    ``every-step`` (Pulumi's default, and ``auto``) rewrites the whole checkpoint after every resource
    step: the cost of a step grows with the stack, half the CPU of a 448-resource sim site stack's up.
    ``final`` (PULUMI_SKIP_CHECKPOINTS) writes once at the end (and on Ctrl-C): up 103 s -> 68 s there.
    It stays opt-in: an update killed outright then loses its record of every object it created, not
    only of the steps in flight, and its recovery run must take all of them over (rollout._adopting).
    """
    if requested not in CHECKPOINT_CHOICES:
        raise ShardError(f"must be one of {', '.join(CHECKPOINT_CHOICES)} (got {requested!r})")
    if requested == "auto":
        return "every-step"
    return requested  # type: ignore[return-value]


# What an overloaded or briefly unavailable API server / etcd answers (measured on the sim fleet: two
# datacenter stacks failed after 8 minutes on "resource quota evaluation timed out" with the machine's
# CPUs saturated). The same update, run again, converges: Pulumi and server-side apply are idempotent.
# A refused connection is not here: an API server that is down stays down for a while.
TRANSIENT_ERRORS = (
    "resource quota evaluation timed out",
    "etcdserver: request timed out",
    "etcdserver: leader changed",
    "the server is currently unable to handle the request",
    "the server was unable to return a response in the time allotted",
    "context deadline exceeded",
    "tls handshake timeout",
    "i/o timeout",
    "connection reset by peer",
    "http2: client connection lost",
    "too many requests",
)


def transient_error(message: str) -> bool:
    """Whether a failed stack's error is one that trying the same update again usually clears."""
    low = message.lower()
    return any(t in low for t in TRANSIENT_ERRORS)
