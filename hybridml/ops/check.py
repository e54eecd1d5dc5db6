"""`hybridml check`: the policy rules applied offline to everything the program would build.

Runs the real program under the mock runtime (hybridml.ops.preview), turns every registered
resource into a ResourceView with the site of its Kubernetes provider, and evaluates the
same rules the CrossGuard pack enforces at `pulumi preview`, plus the plan-level rules and a
scan of the stack config for plaintext secrets. No cloud credentials, no Pulumi CLI.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import yaml

from hybridml.stack.config import stack_files_for
from infra.loader import load_environment
from policies.facts import context_for
from policies.placement.plan import PlacementPlan
from policies.rules import ALL_RULES, Context, Finding, ResourceView, evaluate
from policies.rules.secrets import config_plaintext


@dataclass
class CheckReport:
    environment: str
    resources: int
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mandatory(self) -> list[Finding]:
        return [f for f in self.findings if f.mandatory]

    @property
    def advisory(self) -> list[Finding]:
        return [f for f in self.findings if not f.mandatory]


def config_findings(stack_file: Path) -> list[Finding]:
    config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
    return [Finding("secrets-not-in-config", f"{stack_file.name} {key}", "secret-looking config value in plaintext",
                    f"pulumi config set --secret {key.split(':', 1)[-1]} ...", None, True, "critical")
            for key in config_plaintext(config)]


def program_views(spec: str, *, plan: PlacementPlan | None = None, mode: str = "cloud") -> tuple[list[ResourceView], Context]:
    """Every resource the program would build for `spec` (run under mocks), as the rules see them, with their context.
    Raises pulumi.RunError when a component refuses to build."""
    from hybridml.ops.preview import run_preview
    from infra.loader import resolve_spec_path
    from policies.placement import solve

    env = load_environment(spec)
    plan = plan or solve(env)
    ctx = context_for(env, plan)
    with tempfile.TemporaryDirectory() as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(plan.model_dump_json())
        result = run_preview(str(resolve_spec_path(spec)), mode=mode, plan_file=str(plan_file))
    views = [ResourceView(r.type, r.name, r.props, cluster=result.cluster_of(r), urn=r.urn)
             for r in result.resources if r.custom and not r.type.startswith("pulumi:providers:")]
    return views, ctx


def run_check(spec: str, *, plan: PlacementPlan | None = None, mode: str = "cloud") -> CheckReport:
    from infra.loader import resolve_spec_path
    from policies.placement import solve

    started = time.perf_counter()
    env = load_environment(spec)
    plan = plan or solve(env)
    try:
        views, ctx = program_views(spec, plan=plan, mode=mode)
    except pulumi.RunError as exc:
        # A component refused to build (e.g. no namespace for a tier the site may not hold). The plan
        # rules say why; report both instead of a traceback.
        ctx = context_for(env, plan)
        findings = evaluate([r for r in ALL_RULES if r.stack_check], [], ctx)
        findings.append(Finding("program-refused", "pulumi program", str(exc).splitlines()[0],
                                "fix the placement or spec the rules above name", None, True, "critical"))
        return CheckReport(environment=env.name, resources=0, findings=findings,
                           seconds=time.perf_counter() - started)
    findings = evaluate(ALL_RULES, views, ctx)
    for stack_file in stack_files_for(resolve_spec_path(spec)):
        findings.extend(config_findings(stack_file))
    return CheckReport(environment=env.name, resources=len(views), findings=findings,
                       seconds=time.perf_counter() - started)
