#!/usr/bin/env python3
"""Prepares the build context of the streaming views' Flink job image (workloads/images.py `Images.feature_ingest`),
which a release pipeline builds and pushes (no container runtime or registry is used by this repository):

    .venv/bin/python scripts/job_image_context.py CONTEXT [--source URL]

CONTEXT (a new or empty folder) gets:
  Containerfile        workloads/streaming/Containerfile
  build-args           NAME=VALUE, one a line: every ARG of the Containerfile, each read from its one place
  connector/pom.xml    tools/kafka_rig.py CONNECTOR_POM (flink-connector-kafka shaded as flink-sql-connector-kafka)
  connector/mvn.args   tools/kafka_rig.py CONNECTOR_BUILD: so the image's connector is the jar the local tests ran
  hybridml/workloads/  __init__.py and streaming/*.py: the job, nothing else of the repository
and prints the build command. Offline: Maven and pip run inside the image build, not here.

Where each build-arg comes from: FLINK_IMAGE `Images.flink`; APACHE_FLINK_VERSION the pin of scripts/flink_venv.sh
(the local PyFlink); PYTHON_VERSION pyproject's requires-python; CONNECTOR_VERSION tools/kafka_rig.py;
FLINK_PYTHON_JAR the rendered jarURI (workloads/render/flink.py PYTHON_JAR); RUN_UID the rendered pods' runAsUser
(workloads/render/pods.py UID); IMAGE_VERSION the tag of `Images.feature_ingest`; SOURCE `--source` or the git
remote `origin`; REVISION the git commit (`+dirty` when the shipped files differ from it).
tests/workloads/test_job_image.py checks that these agree with each other and with the rendered FlinkDeployment.
Exit 2 with the reason when CONTEXT is not empty, a source cannot be read, or no source URL is known.
"""
from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tools import kafka_rig  # noqa: E402
from workloads.images import Images  # noqa: E402
from workloads.render import flink, pods  # noqa: E402

CONTAINERFILE = REPO / "workloads" / "streaming" / "Containerfile"
FLINK_VENV = REPO / "scripts" / "flink_venv.sh"
SHIPPED_ROOT = "hybridml"
"""The context folder copied to /opt/hybridml (the image's PYTHONPATH)."""


class ContextError(ValueError):
    pass


def shipped_files() -> list[str]:
    """Repository paths the image carries: the job package and the package __init__ above it."""
    return ["workloads/__init__.py", *sorted(p.relative_to(REPO).as_posix()
                                             for p in (REPO / "workloads" / "streaming").glob("*.py"))]


def apache_flink_pin(path: Path = FLINK_VENV) -> str:
    """The `apache-flink` version scripts/flink_venv.sh installs (its FLINK_VERSION=...)."""
    found = re.findall(r'^FLINK_VERSION="([^"]+)"$', path.read_text(), re.M)
    if len(found) != 1:
        raise ContextError(f"{path.relative_to(REPO)}: expected one line FLINK_VERSION=\"x.y.z\", found {len(found)}")
    return found[0]


def python_version(path: Path = REPO / "pyproject.toml") -> str:
    """The project's Python minor (requires-python `>=3.N,<3.N+1`)."""
    spec = tomllib.loads(path.read_text())["project"]["requires-python"]
    found = re.fullmatch(r">=\s*(3\.\d+)(?:\.\d+)?\s*,\s*<\s*3\.\d+", spec)
    if not found:
        raise ContextError(f"{path.relative_to(REPO)}: project.requires-python {spec!r} names no single Python 3.N")
    return found[1]


def _git(*args: str) -> str:
    res = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else ""


def revision() -> str:
    commit = _git("rev-parse", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--", *shipped_files(), "workloads/streaming/Containerfile")
    return f"{commit}+dirty" if dirty else commit


def build_args(source: str) -> dict[str, str]:
    ingest = Images().feature_ingest
    return {
        "FLINK_IMAGE": Images().flink,
        "APACHE_FLINK_VERSION": apache_flink_pin(),
        "PYTHON_VERSION": python_version(),
        "CONNECTOR_VERSION": kafka_rig.CONNECTOR_VERSION,
        "FLINK_PYTHON_JAR": flink.PYTHON_JAR.removeprefix("local://"),
        "RUN_UID": str(pods.UID),
        "IMAGE_VERSION": ingest.rsplit(":", 1)[1] if ":" in ingest.rsplit("/", 1)[-1] else "",
        "SOURCE": source,
        "REVISION": revision(),
    }


def prepare(out: Path, source: str) -> dict[str, str]:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ContextError(f"{out}: not an empty folder (the context is written fresh)")
    args = build_args(source)
    if not args["IMAGE_VERSION"]:
        raise ContextError(f"workloads/images.py Images.feature_ingest {Images().feature_ingest!r}: no tag")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CONTAINERFILE, out / "Containerfile")
    (out / "build-args").write_text("".join(f"{k}={v}\n" for k, v in args.items()))
    (out / "connector").mkdir()
    (out / "connector" / "pom.xml").write_text(kafka_rig.CONNECTOR_POM)
    (out / "connector" / "mvn.args").write_text(" ".join(kafka_rig.CONNECTOR_BUILD) + "\n")
    for rel in shipped_files():
        dest = out / SHIPPED_ROOT / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, dest)
    return args


def build_command(out: Path, args: dict[str, str], tool: str = "podman") -> str:
    words = [tool, "build", "--platform", "linux/amd64", "--file", str(out / "Containerfile")]
    words += [w for k, v in args.items() for w in ("--build-arg", f"{k}={v}")]
    return shlex.join([*words, "--tag", Images().feature_ingest, str(out)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("context", type=Path)
    p.add_argument("--source", help="the repository URL for the image's source label (default: git remote origin)")
    ns = p.parse_args(argv)
    source = ns.source or _git("remote", "get-url", "origin")
    try:
        if not source:
            raise ContextError("no git remote origin: pass --source URL (the image's org.opencontainers.image.source)")
        args = prepare(ns.context, source)
    except (ContextError, OSError, KeyError) as exc:
        print(f"job_image_context: {exc}", file=sys.stderr)
        return 2
    files = sorted(p.relative_to(ns.context).as_posix() for p in ns.context.rglob("*") if p.is_file())
    print(f"job_image_context: {len(files)} files in {ns.context}: {', '.join(files)}")
    print("".join(f"  {k}={v}\n" for k, v in args.items()), end="")
    print(f"build (not run here; docker takes the same arguments):\n  {build_command(ns.context, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
