"""The one error hierarchy of hybridml.

Library code raises these; only the CLI prints them and picks exit codes
(2 for bad input, 1 for an infeasible plan or a policy failure).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class HybridmlError(Exception):
    """Root of every error hybridml raises on purpose."""

    exit_code: int = 1


@dataclass(frozen=True)
class SpecIssue:
    """One problem in an input file: where it is and what is wrong."""

    path: tuple[str | int, ...]
    message: str
    line: int | None = None

    @property
    def dotted_path(self) -> str:
        out = ""
        for part in self.path:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out += ("." if out else "") + str(part)
        return out or "<root>"

    def render(self, file: str | None) -> str:
        where = file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.dotted_path}: {self.message}"


class SpecError(HybridmlError):
    """The environment spec (or another input file) is invalid."""

    exit_code = 2

    def __init__(self, file: str | None, issues: list[SpecIssue]):
        self.file = file
        self.issues = issues
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.file or '<spec>'}: {len(self.issues)} problem(s)"
        return "\n".join([head] + ["  " + issue.render(self.file) for issue in self.issues])


@dataclass
class InfeasibleReason:
    """Why one pipeline (or the fleet as a whole) cannot be placed."""

    pipeline: str | None
    constraint: str
    detail: str
    hint: str = ""


class PlacementInfeasible(HybridmlError):
    """No placement satisfies every constraint; carries the reasons."""

    exit_code = 1

    def __init__(self, reasons: list[InfeasibleReason]):
        self.reasons = reasons
        lines = [f"placement infeasible: {len(reasons)} reason(s)"]
        for r in reasons:
            who = f"pipeline {r.pipeline}" if r.pipeline else "fleet"
            lines.append(f"  {who}: [{r.constraint}] {r.detail}" + (f" (fix: {r.hint})" if r.hint else ""))
        super().__init__("\n".join(lines))


@dataclass
class PolicyViolation:
    rule: str
    resource: str
    message: str
    fix: str
    cluster: str | None = None
    mandatory: bool = True


class PolicyFailure(HybridmlError):
    exit_code = 1

    def __init__(self, violations: list[PolicyViolation]):
        self.violations = violations
        super().__init__(f"{len(violations)} policy violation(s)")


class InvalidValue(HybridmlError, ValueError):
    """A value handed to a library helper is malformed (a Kubernetes quantity, a manifest without a kind).
    Still a ValueError, so validators and callers that expect one keep working."""

    exit_code = 2


class ToolchainMissing(HybridmlError):
    """A Go-built tool (pulumi, kube-apiserver, kwok, ...) is not on PATH.

    ``missing`` names what was not found, ``searched`` the directories looked in (both may be empty)."""

    exit_code = 2

    def __init__(self, message: str, *, missing: list[str] | None = None, searched: list[Path] | None = None):
        self.missing: list[str] = missing if missing is not None else []
        self.searched: list[Path] = searched if searched is not None else []
        super().__init__(message)
