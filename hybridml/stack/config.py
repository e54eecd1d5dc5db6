"""Stack config: the keys the program reads (namespace `hybridml`; parsed by hybridml/stack/settings.py), and
the environment stacks' `Pulumi.<env>.yaml` files of the project they live in. Imports no Pulumi SDK, so the
CLI's fast paths (status, the rollout's planning) stay fast.

Keys (see Pulumi.<stack>.yaml):
    spec                     spec path or shipped name (required)
    mode                     cloud (EKS + on-prem clusters) | local (local control planes, kwok nodes)
    sites                    optional list: build only these sites and their share of the serving
                             stack (a site stack); default every site the plan uses
    role                     optional `fleet`: the fleet stack of a sharded environment (hybridml/ops/shards.py)
    siteStacks               fleet role: {site: site stack name} (default <env>-<site>)
    plan                     optional path to a plan JSON (`hybridml plan SPEC --json`): shards of one
                             environment then share one solved plan instead of each solving again
    localKubeconfig          local mode: kubeconfig path (default .local/kubeconfig)
    localContexts            local mode: {site: context} overrides (default hybridml-<site>)
    onpremKubeconfig-<dc>    cloud mode: SECRET kubeconfig of datacenter <dc>'s cluster
    onpremContext-<dc>       cloud mode: optional context within it
    secretSeed               SECRET seed the serving stack derives its credentials from
    hostedZoneId             cloud mode, optional: the Route53 hosted zone of the environment's domain
                             (`<env>.hybridml.example` unless the workloads' options name another); external-dns and
                             its IAM policy are pinned to it. Unset: external-dns finds the public zone of the domain
                             and may change records under the domain only
    karpenterChartVersion, gpuOperatorChartVersion, amiAlias: pinned defaults, overridable
    bootstrapRacks           optional bool (default false): bootstrap each built datacenter's racks with Ansible
                             in the same update (datacenter/pulumi_racks.py: one resource per rack, racks in
                             turn); the datacenter's workloads wait for its racks
    rackOverrides            with bootstrapRacks: {datacenter: inventory overrides file} (how to reach and
                             configure its hosts; datacenter/inventory/sample/overrides.yml), paths relative
                             to the project; a datacenter without one is reached at its spec addresses
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from infra.errors import HybridmlError

CONFIG_NS = "hybridml"
Mode = Literal["local", "cloud"]
REPO_ROOT = Path(__file__).resolve().parents[2]


def key(name: str) -> str:
    """The full config key of one of the program's settings: key("spec") == "hybridml:spec"."""
    return f"{CONFIG_NS}:{name}"


SPEC = key("spec")
MODE = key("mode")
SITES = key("sites")
ROLE = key("role")
SITE_STACKS = key("siteStacks")
PLAN = key("plan")
SECRET_SEED = key("secretSeed")
HOSTED_ZONE_ID = key("hostedZoneId")
BOOTSTRAP_RACKS = key("bootstrapRacks")
RACK_OVERRIDES = key("rackOverrides")
SHARD_KEYS = frozenset({SITES, PLAN, ROLE, SITE_STACKS})   # set per stack by the sharded rollout


def onprem_kubeconfig_key(datacenter: str, *, qualified: bool = True) -> str:
    name = f"onpremKubeconfig-{datacenter}"
    return key(name) if qualified else name


def onprem_context_key(datacenter: str) -> str:
    return f"onpremContext-{datacenter}"


# --------------------------------------------------------------------------- Pulumi.<stack>.yaml files


@dataclass(frozen=True)
class ConfigEntry:
    value: str
    secret: bool = False


class StackConfigError(HybridmlError):
    """A stack config file (Pulumi.<stack>.yaml) that cannot be read or lacks what the program needs; exit 2."""

    exit_code = 2

    def __init__(self, file: str, reason: str):
        super().__init__(f"{file}: {reason}")


def project_dir() -> Path:
    """The Pulumi project the stacks run (Pulumi.yaml, Pulumi.<stack>.yaml): this repository, or
    $HYBRIDML_PROJECT_DIR (a copy of Pulumi.yaml + __main__.py elsewhere, as the end-to-end tests use)."""
    return Path(os.environ.get("HYBRIDML_PROJECT_DIR") or REPO_ROOT).resolve()


def compact_json(value: Any) -> str:
    """Structured config as Pulumi stores it: compact JSON with sorted keys."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def parse_stack_config_yaml(doc: Any, path: str) -> dict[str, ConfigEntry]:
    """The `config:` block of a Pulumi.<stack>.yaml as entries; `secure:` values are marked secret
    with no value (the caller decrypts them through the engine). Objects/lists become JSON with
    their paths kept (Pulumi's structured config)."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise StackConfigError(path, "not a mapping")
    config = doc.get("config") or {}
    if not isinstance(config, dict):
        raise StackConfigError(path, "config: not a mapping")
    out: dict[str, ConfigEntry] = {}
    for name, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            out[str(name)] = ConfigEntry("", secret=True)
        elif isinstance(value, (dict, list)):
            out[str(name)] = ConfigEntry(compact_json(value))
        else:
            out[str(name)] = ConfigEntry("" if value is None else str(value).lower() if isinstance(value, bool)
                                         else str(value))
    return out


def read_stack_config(environment: str) -> dict[str, ConfigEntry]:
    """The environment stack's config (Pulumi.<env>.yaml) as written: secret values still encrypted."""
    import yaml

    path = project_dir() / f"Pulumi.{environment}.yaml"
    if not path.exists():
        raise StackConfigError(str(path), f"no such stack config; an environment is a Pulumi.<env>.yaml "
                                          f"({SPEC}, {MODE}, ...) in {project_dir()}")
    try:
        entries = parse_stack_config_yaml(yaml.safe_load(path.read_text()), path.name)
    except yaml.YAMLError as exc:
        raise StackConfigError(path.name, f"not YAML: {exc}") from None
    if SPEC not in entries:
        raise StackConfigError(path.name, f"config: {SPEC} is required")
    return entries


def project_config_defaults() -> dict[str, str]:
    """Defaults Pulumi.yaml declares for project config keys: the engine passes them to the program when a
    stack does not set the key, so they are part of what the program runs with."""
    import yaml

    doc = yaml.safe_load((project_dir() / "Pulumi.yaml").read_text()) or {}
    project = doc.get("name", "")
    out = {}
    for name, decl in (doc.get("config") or {}).items():
        if isinstance(decl, dict) and "default" in decl:
            full = name if ":" in name else f"{project}:{name}"
            value = decl["default"]
            out[full] = value if isinstance(value, str) else json.dumps(value)
    return out


def stack_files_for(spec_path: Path) -> list[Path]:
    """Pulumi.<stack>.yaml files of this repository whose hybridml:spec names this spec."""
    import yaml

    out = []
    for path in sorted(REPO_ROOT.glob("Pulumi.*.yaml")):
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        named = config.get(SPEC)
        if named and (REPO_ROOT / named).resolve() == spec_path.resolve():
            out.append(path)
    return out
