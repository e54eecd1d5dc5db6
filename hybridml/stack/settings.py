"""The program's settings, parsed once from its stack config (the keys: hybridml/stack/config.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pulumi

from clusters.gpu_stack import GPU_OPERATOR_CHART_VERSION
from clusters.karpenter import AMI_ALIAS, KARPENTER_CHART_VERSION
from clusters.local_cluster import DEFAULT_KUBECONFIG
from hybridml.stack.config import CONFIG_NS, Mode, key
from infra.errors import SpecError, SpecIssue


def _config_error(name: str, reason: str) -> SpecError:
    return SpecError("stack config", [SpecIssue((key(name),), reason)])


@dataclass(frozen=True)
class ProgramSettings:
    """Everything the program reads from stack config, parsed once (tests build it directly)."""

    spec: str
    mode: Mode = "cloud"
    sites: tuple[str, ...] | None = None
    role: Literal["environment", "fleet"] = "environment"
    site_stacks: dict[str, str] = field(default_factory=dict)
    plan_file: str | None = None
    local_kubeconfig: str = DEFAULT_KUBECONFIG
    local_contexts: dict[str, str] = field(default_factory=dict)
    karpenter_chart_version: str = KARPENTER_CHART_VERSION
    gpu_operator_chart_version: str = GPU_OPERATOR_CHART_VERSION
    ami_alias: str = AMI_ALIAS
    bootstrap_racks: bool = False
    rack_overrides: dict[str, str] = field(default_factory=dict)   # datacenter -> overrides file

    @classmethod
    def from_config(cls, cfg: pulumi.Config | None = None) -> ProgramSettings:
        cfg = cfg or pulumi.Config(CONFIG_NS)
        mode = cfg.get("mode") or "cloud"
        if mode not in ("local", "cloud"):
            raise _config_error("mode", f"must be local or cloud (got {mode!r})")
        sites = cfg.get_object("sites")
        if sites is not None and (not isinstance(sites, list) or not all(isinstance(s, str) for s in sites)):
            raise _config_error("sites", f"must be a list of site names (got {sites!r})")
        role = cfg.get("role") or "environment"
        if role not in ("environment", "fleet"):
            raise _config_error("role", f"must be environment or fleet (got {role!r})")
        site_stacks = cfg.get_object("siteStacks") or {}
        if not isinstance(site_stacks, dict):
            raise _config_error("siteStacks", f"must map site names to stack names (got {site_stacks!r})")
        racks = (cfg.get("bootstrapRacks") or "false").strip().lower()
        if racks not in ("true", "false"):
            raise _config_error("bootstrapRacks", f"must be true or false (got {cfg.get('bootstrapRacks')!r})")
        rack_overrides = cfg.get_object("rackOverrides") or {}
        if not isinstance(rack_overrides, dict) or not all(
                isinstance(v, str) and v.strip() for v in rack_overrides.values()):
            raise _config_error("rackOverrides", "must map datacenter names to inventory overrides files "
                                                 f"(got {rack_overrides!r})")
        return cls(
            spec=cfg.require("spec"), mode=mode,  # type: ignore[arg-type]
            sites=tuple(sites) if sites else None, role=role,  # type: ignore[arg-type]
            site_stacks={str(k): str(v) for k, v in site_stacks.items()},
            plan_file=cfg.get("plan"),
            local_kubeconfig=cfg.get("localKubeconfig") or DEFAULT_KUBECONFIG,
            local_contexts=dict(cfg.get_object("localContexts") or {}),
            karpenter_chart_version=cfg.get("karpenterChartVersion") or KARPENTER_CHART_VERSION,
            gpu_operator_chart_version=cfg.get("gpuOperatorChartVersion") or GPU_OPERATOR_CHART_VERSION,
            ami_alias=cfg.get("amiAlias") or AMI_ALIAS,
            bootstrap_racks=racks == "true",
            rack_overrides={str(k): str(v) for k, v in rack_overrides.items()},
        )
