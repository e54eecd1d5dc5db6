"""The placement plan file: one per environment, read by every stack of it (`hybridml:plan`).

The sharded rollout solves once and writes `<project>/.local/plans/<env>.json`; each site stack and the
fleet stack read that file instead of solving again, so they all agree. `hybridml status` reads the same
file by default; `hybridml plan SPEC --json FILE` writes one by hand. One reader checks a plan against the
spec it is used with; one writer leaves a file alone that already holds the same decision.
"""
from __future__ import annotations

import json
from pathlib import Path

from hybridml.stack.config import PLAN, project_dir
from infra.errors import SpecError, SpecIssue
from infra.spec import Environment
from policies.placement.plan import PlacementPlan

PLAN_DIR = Path(".local") / "plans"       # relative to the project directory (the programs' cwd)


def plan_path(environment: str, *, relative: bool = False) -> Path:
    """Where the rollout keeps an environment's plan (relative to the project directory if asked)."""
    rel = PLAN_DIR / f"{environment}.json"
    return rel if relative else project_dir() / rel


def read_plan(path: Path, *, field: str = PLAN) -> PlacementPlan:
    """A plan file, or a SpecError naming the file and the option/key it came from."""
    try:
        return PlacementPlan.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        raise SpecError(str(path), [SpecIssue((field,), "not a placement plan (hybridml plan SPEC --json FILE): "
                                              + (first[0] if first else type(exc).__name__))]) from None


def read_plan_for(env: Environment, path: Path, *, field: str = PLAN, strict: bool = False) -> PlacementPlan:
    """read_plan, checked against the spec it is used with: the same environment (and, if `strict`, no
    pipeline the spec lacks: a stale plan)."""
    plan = read_plan(path, field=field)
    if plan.environment != env.name:
        raise SpecError(str(path), [SpecIssue((field,), f"the plan is for environment {plan.environment!r}, "
                                                        f"not {env.name!r}")])
    if strict:
        unknown = sorted({p.name for p in plan.pipelines} - {p.name for p in env.pipelines})
        if unknown:
            raise SpecError(str(path), [SpecIssue((field,), "the plan places pipelines the spec does not have: "
                                                  f"{', '.join(unknown[:5])} (stale plan? hybridml plan SPEC --json "
                                                  "FILE)")])
    return plan


def load_plan(env: Environment, plan_file: str | None) -> PlacementPlan:
    """The plan a program run uses: the file it is given, else solved (the same solver and gap as
    `hybridml plan`: the same spec gives the same plan)."""
    if plan_file is None:
        from policies.placement import solve

        return solve(env)
    return read_plan_for(env, Path(plan_file))


def write_plan(path: Path, plan: PlacementPlan) -> None:
    """Write the plan the stacks read, unless the file already holds the same decision: a re-solve differs
    only in its timings, and rewriting the file would change every stack's inputs (hybridml:plan is read
    by the program, so its bytes are in the inputs fingerprint) for nothing."""
    if path.exists():
        try:
            if PlacementPlan.model_validate_json(path.read_text()).digest() == plan.digest():
                return
        except ValueError:
            pass   # unreadable or from another version: replaced below
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan.model_dump_json(indent=1))
