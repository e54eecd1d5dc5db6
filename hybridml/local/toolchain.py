"""Locate the Go-built toolchain produced by ``scripts/toolchain.sh``.

The script installs symlinks to the pinned binaries in ``~/.cache/hybridml/bin/current`` (or
``$HYBRIDML_CACHE/bin/current``); ``eval "$(scripts/toolchain.sh --env)"`` exports
``HYBRIDML_TOOLCHAIN_BIN`` and ``HYBRIDML_KWOK_STAGES`` pointing there. A missing binary raises
`infra.errors.ToolchainMissing` (exit code 2), naming what is missing and where it was looked for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from infra.errors import ToolchainMissing

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "toolchain.sh"

CONTROL_PLANE_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "ray-operator",      # the KubeRay operator (reconciles the batch pipelines' RayClusters and RayJobs)
    "kserve-controller",  # the KServe controller manager (reconciles the Triton pipelines' InferenceServices)
)

KWOK_STAGE_FILES = (
    "node-initialize.yaml",
    "node-heartbeat.yaml",
    "pod-create.yaml",
    "pod-init-container-running.yaml",
    "pod-init-container-completed.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)


def _missing(missing: list[str], searched: list[Path]) -> ToolchainMissing:
    """The error for binaries not found (``missing`` and ``searched`` are kept on it)."""
    return ToolchainMissing(
        f"toolchain binaries not found: {', '.join(missing)} "
        f"(searched {', '.join(str(p) for p in searched)} and PATH); "
        "build them with `scripts/toolchain.sh` (or `eval \"$(scripts/toolchain.sh --env)\"`)",
        missing=missing,
        searched=searched,
    )


def cache_dir() -> Path:
    return Path(os.environ.get("HYBRIDML_CACHE") or Path.home() / ".cache" / "hybridml")


def toolchain_bin_dirs() -> list[Path]:
    dirs: list[Path] = []
    env = os.environ.get("HYBRIDML_TOOLCHAIN_BIN")
    if env:
        dirs.append(Path(env))
    dirs.append(cache_dir() / "bin" / "current")
    return dirs


def find_binary(name: str) -> Path | None:
    for d in toolchain_bin_dirs():
        p = d / name
        if p.is_file() and os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    return Path(found) if found else None


def find_binaries(names: tuple[str, ...] = CONTROL_PLANE_BINARIES) -> dict[str, Path]:
    """Return ``{name: path}`` for every binary, or raise :class:`ToolchainMissing`."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for n in names:
        p = find_binary(n)
        if p is None:
            missing.append(n)
        else:
            found[n] = p
    if missing:
        raise _missing(missing, toolchain_bin_dirs())
    return found


def kwok_stage_files() -> list[Path]:
    """The kwok Stage configs shipped next to the kwok binary by the toolchain script."""
    candidates: list[Path] = []
    env = os.environ.get("HYBRIDML_KWOK_STAGES")
    if env:
        candidates.append(Path(env))
    candidates += [d / "kwok-stages" for d in toolchain_bin_dirs()]
    kwok = find_binary("kwok")
    if kwok is not None:
        candidates.append(kwok.resolve().parent / "kwok-stages")
    for d in candidates:
        files = [d / f for f in KWOK_STAGE_FILES]
        if all(f.is_file() for f in files):
            return files
    raise _missing(["kwok-stages/" + f for f in KWOK_STAGE_FILES[:1]], candidates)


def script_environment() -> tuple[dict[str, str] | None, str]:
    """What ``eval "$(scripts/toolchain.sh --env)"`` exports (PATH, PULUMI_HOME, ...), without building
    anything: ``(None, why)`` when the toolchain is not built, else ``(variables, "")``. PATH values
    are expanded against this process's PATH."""
    check = subprocess.run(["bash", str(SCRIPT), "--check"], capture_output=True, text=True)
    if check.returncode != 0:
        return None, (check.stdout + check.stderr).strip()[-300:]
    out = subprocess.run(["bash", str(SCRIPT), "--env"], capture_output=True, text=True, check=True).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        m = re.match(r'export (\w+)="?(.*?)"?$', line.strip())
        if m:
            env[m.group(1)] = m.group(2).replace("$PATH", os.environ.get("PATH", ""))
    return env, ""
