"""A stack's inputs fingerprint: everything that decides what the program registers.

The program is deterministic: the same source, the same stack config (secrets included), the same spec
and plan file and the same installed SDKs register the same resources with the same inputs. Each stack
exports the fingerprint of those inputs (as a secret: it hashes secret config values; the fleet stack
adds the site stacks' outputs it reads), so after a successful `up` a later `hybridml preview ENV
--engine --skip-unchanged` can tell, in seconds per stack and without the engine, that a stack's program
would register exactly what it last deployed.
What this cannot see is the live cluster drifting from the state: that is the engine preview's
(server-side dry run) and `hybridml status`'s business, and a full `--engine` preview still does it.
"""
from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from hybridml.stack.config import PLAN, RACK_OVERRIDES, SPEC

# what the program's behaviour can depend on: its rooms, its entry point and project file
PROGRAM_ROOMS = ("hybridml", "clusters", "workloads", "infra", "policies", "datacenter")
PROGRAM_FILES = ("Pulumi.yaml", "__main__.py")
# the distributions whose version can change a registration (SDKs, the solver behind a self-solved plan,
# the models the spec is validated with)
DISTRIBUTIONS = ("pulumi", "pulumi-kubernetes", "pulumi-aws", "highspy", "pydantic", "PyYAML")
EXPORT = "inputs_fingerprint"
SOURCE_ROOT = Path(__file__).resolve().parents[2]   # the checkout this package runs from


def canonical_config(config: Mapping[str, str]) -> dict[str, str]:
    """Config values as strings, JSON objects/lists re-encoded canonically (the engine and the Automation
    API may format the same structured value differently)."""
    out = {}
    for key, value in config.items():
        text = value if isinstance(value, str) else json.dumps(value)
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        out[key] = json.dumps(parsed, sort_keys=True, separators=(",", ":")) if isinstance(parsed, (dict, list)) \
            else text
    return out


def fingerprint(config: Mapping[str, str], files: Mapping[str, bytes], versions: Mapping[str, str],
                references: Mapping[str, Any] | None = None) -> str:
    """sha256 over the canonical config, every file's path and content, the distributions' versions and,
    for a stack that reads other stacks, the outputs it reads from each (stack name -> value)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(canonical_config(config), sort_keys=True).encode())
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    digest.update(json.dumps(dict(versions), sort_keys=True).encode())
    if references is not None:
        digest.update(json.dumps(_integral(dict(references)), sort_keys=True).encode())
    return digest.hexdigest()


def _integral(value: Any) -> Any:
    """Integral floats as ints: a stack reference hands the program 24.0 where the state file says 24."""
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def program_inputs(project: Path, config: Mapping[str, str]) -> tuple[dict[str, bytes], dict[str, str]]:
    """(files, versions) the program run under `config` depends on: its source rooms (where this package
    is imported from), the project files (Pulumi.yaml, __main__.py) and the spec and plan file the config
    names, both relative to `project` (the directory the engine runs the program in)."""
    files = dict(_source_files(str(SOURCE_ROOT)))
    for name in PROGRAM_FILES:
        if (project / name).is_file():
            files[name] = (project / name).read_bytes()
    for key in (SPEC, PLAN):
        value = config.get(key)
        if not value:
            continue
        path = Path(value) if Path(value).is_absolute() else project / value
        if not path.is_file() and key == SPEC:
            from infra.loader import resolve_spec_path  # a shipped name ("prod")

            try:
                path = resolve_spec_path(value)
            except Exception:  # noqa: BLE001 - a bad spec path fails the program itself, with its message
                continue
        if path.is_file():
            files[f"{key}={value}"] = path.read_bytes()
    # the racks' inventory overrides: a changed host var is a changed rack
    for dc, value in sorted(_json_object(config.get(RACK_OVERRIDES)).items()):
        path = Path(str(value)) if Path(str(value)).is_absolute() else project / str(value)
        if path.is_file():
            files[f"{RACK_OVERRIDES}.{dc}={value}"] = path.read_bytes()
    return files, dict(_versions())


def _json_object(value: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if value else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


@functools.lru_cache(maxsize=4)
def _source_files(root: str) -> tuple[tuple[str, bytes], ...]:
    base = Path(root)
    out = []
    for room in PROGRAM_ROOMS:
        for path in sorted((base / room).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                out.append((str(path.relative_to(base)), path.read_bytes()))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    out = []
    for dist in DISTRIBUTIONS:
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((dist, "absent"))
    return tuple(out)


def inputs_fingerprint(config: Mapping[str, str], project: Path, references: Mapping[str, Any] | None = None) -> str:
    files, versions = program_inputs(project, config)
    return fingerprint(config, files, versions, references)
