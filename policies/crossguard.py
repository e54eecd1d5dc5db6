"""Adapter from our pure rules to CrossGuard policies. Building the PolicyPack itself blocks,
so that happens only in policies/pack/__main__.py."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

from infra.errors import SpecError, SpecIssue
from policies.facts import context_for, view
from policies.rules import ALL_RULES, Context, Enforcement, Rule

REPO = Path(__file__).resolve().parents[1]
SPEC_KEY, PLAN_KEY = "hybridml:spec", "hybridml:plan"   # the program's own keys (hybridml/stack/config.py)


def _stack_path(value: str) -> Path:
    """A path from the stack's config as the program reads it (relative to the project directory, which is
    this repository or a copy of its program), or a shipped environment's name."""
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return REPO / path if (REPO / path).exists() else path


def stack_inputs(config: Mapping[str, str], environ: Mapping[str, str]) -> tuple[str, str | None]:
    """(spec, plan file or None) of the stack being checked: its own `hybridml:spec` / `hybridml:plan`, as the
    program reads them. `$HYBRIDML_SPEC` only for a program that names no spec; never a default spec, so
    prod resources are never judged by another environment's sites."""
    spec = config.get(SPEC_KEY) or environ.get("HYBRIDML_SPEC")
    if not spec:
        stack = environ.get("PULUMI_STACK", "?")
        raise SpecError(f"stack {stack}", [SpecIssue((SPEC_KEY,), "the policy pack needs the stack's spec: set it with "
                                                                 f"`pulumi config set {SPEC_KEY} SPEC` (or $HYBRIDML_SPEC)")])
    plan = config.get(PLAN_KEY)
    return spec, plan


_STACK: dict[str, Any] = {"stack": None, "config": None}


def record_stack(stack: str, config: Mapping[str, str]) -> None:
    """Keep the stack name and config the engine hands the pack (its ConfigureStack call)."""
    _STACK.update(stack=stack, config=dict(config))


def _context() -> Context:
    import pulumi

    config = _STACK["config"] if _STACK["config"] is not None else dict(pulumi.runtime.get_config_env())
    environ = dict(os.environ)
    if _STACK["stack"]:
        environ["PULUMI_STACK"] = _STACK["stack"]
    return _context_for(*stack_inputs(config, environ))


@lru_cache(maxsize=2)
def _context_for(spec: str, plan_file: str | None) -> Context:
    import json

    from infra.loader import load_environment, resolve_spec_path
    from policies.placement import solve
    from policies.placement.plan import PlacementPlan

    path = _stack_path(spec)
    env = load_environment(path if path.exists() else resolve_spec_path(spec))
    plan = PlacementPlan.model_validate(json.loads(_stack_path(plan_file).read_text())) if plan_file else solve(env)
    return context_for(env, plan)


def _level(rule: Rule) -> EnforcementLevel:
    return EnforcementLevel.MANDATORY if rule.enforcement is Enforcement.mandatory else EnforcementLevel.ADVISORY


def _plain(value: Any) -> Any:
    """CrossGuard hands properties over as read-only proxies (Mapping/Sequence, not dict/list) that
    raise on values unknown at preview: the pure rules expect plain data (unknown -> None)."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key in value:
            try:
                out[key] = _plain(value[key])
            except UnknownValueError:
                out[key] = None
        return out
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items: list[Any] = []
        for i in range(len(value)):
            try:
                items.append(_plain(value[i]))
            except UnknownValueError:
                items.append(None)
        return items
    return value


def _provider_name(args: ResourceValidationArgs | PolicyResource) -> str | None:
    provider = getattr(args, "provider", None)
    name: str | None = getattr(provider, "name", None) if provider is not None else None
    return name


def _resource_policy(rule: Rule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        ctx = _context()
        r = view(args.resource_type, args.name, _plain(args.props), _provider_name(args), ctx.sites, args.urn)
        for finding in rule.findings(r, ctx):
            where = f" on cluster {finding.cluster}" if finding.cluster else ""
            report_violation(f"{finding.resource}{where}: {finding.message}. Fix: {finding.fix}", args.urn)

    return ResourceValidationPolicy(name=rule.name, description=rule.description,
                                    enforcement_level=_level(rule), validate=validate)


def _stack_policy(rule: Rule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        ctx = _context()
        views = [view(r.resource_type, r.name, _plain(r.props), _provider_name(r), ctx.sites, r.urn)
                 for r in args.resources]
        for finding in rule.stack_findings(views, ctx):
            report_violation(f"{finding.resource}: {finding.message}. Fix: {finding.fix}", None)

    return StackValidationPolicy(name=rule.name, description=rule.description,
                                 enforcement_level=_level(rule), validate=validate)


def policies() -> list[Policy]:
    return [(_resource_policy(r) if r.check else _stack_policy(r)) for r in ALL_RULES]
