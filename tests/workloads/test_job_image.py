"""The streaming job's image recipe against the program: workloads/streaming/Containerfile and the build context that
scripts/job_image_context.py prepares for a release pipeline. Nothing here builds or runs the image (no container
runtime or registry on this machine); what is checked is that the recipe says what the rendered FlinkDeployments
expect and takes each version from its one place, so that neither can drift:
- every stage is FROM `Images.flink`, whose Flink is the apache-flink pin of scripts/flink_venv.sh, the version of
  the rendered jarURI (which the build requires in the base image), the rendered flinkVersion and the suffix of the
  `Images.feature_ingest` tag; the connector is tools/kafka_rig.py's (same pom, same mvn arguments) for that Flink;
- the image's user is the rendered pods' runAsUser/runAsGroup; `python` (what the rendered python executables name) is
  the venv with PyFlink, of the project's Python; s3:// state dirs have Flink's S3 plugin; the labels carry the
  image's version and source;
- the context carries the `-pym` module of the rendered args and every project module it imports, nothing else, and
  that copy alone (no site-packages) parses the rendered arguments up to PyFlink's import.
`test_a_drifted_recipe_is_named` breaks each of these once and requires the problem named.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from infra.loader import load_environment
from tests.conftest import REPO
from tools import kafka_rig
from workloads.images import Images
from workloads.render import feature_store, flink
from workloads.render.context import SiteContext

SCRIPT = REPO / "scripts" / "job_image_context.py"
SOURCE = "https://example.invalid/hybridml.git"
FLINK_LIB = "/opt/flink/lib/"


@dataclasses.dataclass(frozen=True)
class Program:
    """What the program says the image must be (each from its own place, not from the context script)."""

    flink_image: str
    ingest_image: str
    apache_flink_pin: str
    python_version: str
    connector_version: str
    connector_pom: str
    connector_build: tuple[str, ...]
    deployments: tuple[dict, ...]


def _program() -> Program:
    pins = re.findall(r'^FLINK_VERSION="([^"]+)"$', (REPO / "scripts" / "flink_venv.sh").read_text(), re.M)
    assert len(pins) == 1, "scripts/flink_venv.sh: expected one FLINK_VERSION=\"x.y.z\" line (the apache-flink pin)"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    python = re.fullmatch(r">=\s*(3\.\d+)\s*,\s*<\s*3\.\d+", requires)
    assert python, f"pyproject.toml requires-python {requires!r}: expected >=3.N,<3.M"
    deployments = []
    for env_name in ("local", "dev", "prod"):
        ctx = SiteContext(env_name=env_name, site="dc-local", site_kind="datacenter", domain="hybridml.test")
        for view in load_environment(env_name).feature_views:
            if view.streaming:
                deployments += [o for o in feature_store.flink_objects(ctx, view, "ml-internal")
                                if o["kind"] == "FlinkDeployment"]
    assert deployments, "no streaming view in the shipped environments: nothing to check the image against"
    return Program(Images().flink, Images().feature_ingest, pins[0], python[1], kafka_rig.CONNECTOR_VERSION,
                   kafka_rig.CONNECTOR_POM, tuple(kafka_rig.CONNECTOR_BUILD), tuple(deployments))


# ---- reading the recipe -------------------------------------------------------------------------------------------

def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) per Containerfile instruction, comments dropped, continuation lines joined."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        word, _, rest = (buf + line).partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _pairs(rest: str) -> dict[str, str]:
    """KEY=VALUE pairs of a LABEL or ENV instruction."""
    return dict(word.split("=", 1) for word in shlex.split(rest) if "=" in word)


def _build_args(ctx: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (ctx / "build-args").read_text().splitlines() if line)


def _expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), value)


def _project_imports(path: Path) -> set[str]:
    """Project modules a module imports at its top level (what loading it needs; lazy imports are PyFlink's)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        out |= {n for n in names if (REPO / n.split(".")[0] / "__init__.py").exists()}
    return out


def _module_files(module: str) -> list[str]:
    """The files `module` needs: each package __init__.py on its way and the module's own file."""
    parts = module.split(".")
    own = "/".join(parts) + ("/__init__.py" if (REPO / "/".join(parts)).is_dir() else ".py")
    return ["/".join(parts[:i]) + "/__init__.py" for i in range(1, len(parts))] + [own]


# ---- the checks ---------------------------------------------------------------------------------------------------

def problems(ctx: Path, prog: Program) -> list[str]:  # noqa: C901, PLR0912, PLR0915 - one check list, read top-down
    out: list[str] = []
    ins = _instructions((ctx / "Containerfile").read_text())
    stages = _stages(ins)
    final = stages[-1]
    args = _build_args(ctx)
    runs = " ; ".join(rest for word, rest in final if word == "RUN")

    # every ARG filled by the context script, and nothing else passed
    declared = {rest.split("=", 1)[0] for word, rest in ins if word == "ARG"}
    out += [f"Containerfile ARG {n} has no value in build-args (scripts/job_image_context.py)" for n in sorted(declared - set(args))]
    out += [f"build-args {n} is no ARG of the Containerfile" for n in sorted(set(args) - declared)]

    # the base: Images.flink, in every stage
    for stage in stages:
        image = stage[0][1].split()[0]
        if image != "${FLINK_IMAGE}":
            out.append(f"Containerfile FROM {image}: every stage must be FROM ${{FLINK_IMAGE}} (workloads/images.py Images.flink)")
    if args.get("FLINK_IMAGE") != prog.flink_image:
        out.append(f"build-args FLINK_IMAGE={args.get('FLINK_IMAGE')} but workloads/images.py Images.flink is {prog.flink_image}")

    # one Flink: base image tag, apache-flink pin, build-arg, jarURI, flinkVersion, the job image's tag
    tag = re.fullmatch(r"flink:(\d+\.\d+\.\d+)-scala_[\d.]+-java\d+", prog.flink_image)
    base = tag[1] if tag else None
    if base is None:
        out.append(f"workloads/images.py Images.flink {prog.flink_image!r}: no flink:X.Y.Z-scala_*-java* tag")
    jars = {d["spec"]["job"]["jarURI"] for d in prog.deployments}
    jar_versions = {m[1] for j in jars if (m := re.fullmatch(r"local:///opt/flink/opt/flink-python-(.+)\.jar", j))}
    if len(jar_versions) != 1 or len(jars) != 1:
        out.append(f"rendered jarURI {sorted(jars)}: expected one local:///opt/flink/opt/flink-python-<flink>.jar")
    suffix = re.search(r"-flink([\d.]+)$", prog.ingest_image)
    versions = {"Images.flink's tag": base, "apache-flink pin of scripts/flink_venv.sh": prog.apache_flink_pin,
                "build-arg APACHE_FLINK_VERSION": args.get("APACHE_FLINK_VERSION"),
                "rendered jarURI": next(iter(jar_versions), None), "Images.feature_ingest's tag": suffix and suffix[1]}
    if len(set(versions.values())) != 1:
        out.append("Flink versions disagree: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    minor = base and ".".join(base.split(".")[:2])
    for d in prog.deployments:
        if d["spec"]["flinkVersion"] != f"v{minor}".replace(".", "_"):
            out.append(f"FlinkDeployment {d['metadata']['name']}: flinkVersion {d['spec']['flinkVersion']}, image Flink {base}")
    if 'apache-flink==${APACHE_FLINK_VERSION}' not in runs:
        out.append("Containerfile: no RUN of the job stage installs apache-flink==${APACHE_FLINK_VERSION}")

    # the jarURI is the base image's own flink-python jar (the build fails without it)
    for jar in jars:
        if args.get("FLINK_PYTHON_JAR") != jar.removeprefix("local://"):
            out.append(f"build-args FLINK_PYTHON_JAR={args.get('FLINK_PYTHON_JAR')} but the rendered jarURI is {jar}")
    if 'test -f "${FLINK_PYTHON_JAR}"' not in runs:
        out.append("Containerfile: the build does not require the jarURI's jar (test -f \"${FLINK_PYTHON_JAR}\")")

    # the Kafka connector: tools/kafka_rig.py's jar, built for this Flink, in lib/
    version = args.get("CONNECTOR_VERSION", "")
    if version != prog.connector_version:
        out.append(f"build-args CONNECTOR_VERSION={version} but tools/kafka_rig.py CONNECTOR_VERSION is {prog.connector_version}")
    if minor and not prog.connector_version.endswith(f"-{minor}"):
        out.append(f"tools/kafka_rig.py CONNECTOR_VERSION {prog.connector_version} is not built for Flink {minor}")
    if (ctx / "connector" / "pom.xml").read_text() != prog.connector_pom:
        out.append("context connector/pom.xml differs from tools/kafka_rig.py CONNECTOR_POM")
    elif f"<finalName>flink-sql-connector-kafka-{prog.connector_version}</finalName>" not in prog.connector_pom:
        out.append(f"tools/kafka_rig.py CONNECTOR_POM builds no flink-sql-connector-kafka-{prog.connector_version}.jar")
    if tuple((ctx / "connector" / "mvn.args").read_text().split()) != prog.connector_build:
        out.append("context connector/mvn.args differs from tools/kafka_rig.py CONNECTOR_BUILD")
    builder = next((s for s in stages[:-1] if " AS connector" in s[0][1]), None)
    if builder is None or not any(w == "RUN" and "mvn -B -q $(cat mvn.args)" in r for w, r in builder):
        out.append("Containerfile: no stage `AS connector` runs mvn -B -q $(cat mvn.args) (tools/kafka_rig.py's build)")
    jar = "/build/target/flink-sql-connector-kafka-${CONNECTOR_VERSION}.jar"
    if not any(w == "COPY" and r.split() == ["--from=connector", jar, FLINK_LIB] for w, r in final):
        out.append(f"Containerfile: the connector jar is not copied into {FLINK_LIB} (COPY --from=connector {jar} {FLINK_LIB})")

    # the user: the rendered pods' runAsUser / runAsGroup
    users = [rest for word, rest in final if word == "USER"]
    user = _expand(users[-1], args) if users else "root"
    uid, _, gid = user.partition(":")
    contexts = [sc for d in prog.deployments for sc in (d["spec"]["podTemplate"]["spec"]["securityContext"],
                                                        d["spec"]["podTemplate"]["spec"]["containers"][0]["securityContext"])]
    for want in sorted({f"{sc.get('runAsUser')}:{sc.get('runAsGroup')}" for sc in contexts}):
        if f"{uid}:{gid or uid}" != want:
            out.append(f"image user {user} (Containerfile USER, build-arg RUN_UID={args.get('RUN_UID')}) but the "
                       f"FlinkDeployments' pods run as {want} (securityContext runAsUser:runAsGroup)")

    # the job: the rendered -pym module and what it imports, at the image's PYTHONPATH, nothing else of the repo
    copies = [r.split() for w, r in final if w == "COPY" and r.split()[0] == "hybridml/"]
    dest = copies[0][1].rstrip("/") if copies else None
    env = {k: v for w, r in final if w == "ENV" for k, v in _pairs(r).items()}
    if dest is None or dest not in env.get("PYTHONPATH", "").split(":"):
        out.append(f"Containerfile: hybridml/ is copied to {dest} but PYTHONPATH is {env.get('PYTHONPATH')}")
    shipped = {p.relative_to(ctx / "hybridml").as_posix() for p in (ctx / "hybridml").rglob("*") if p.is_file()}
    modules = {d["spec"]["job"]["args"][1] for d in prog.deployments if d["spec"]["job"]["args"][:1] == ["-pym"]}
    if len(modules) != 1 or len(prog.deployments) != sum(d["spec"]["job"]["args"][:1] == ["-pym"] for d in prog.deployments):
        out.append(f"rendered job args: expected one `-pym <module>` for every FlinkDeployment, got {sorted(modules)}")
    seen: set[str] = set()
    todo = [(m, "the rendered -pym") for m in sorted(modules)]
    while todo:
        module, importer = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for rel in _module_files(module):
            if rel not in shipped:
                out.append(f"{module} (imported by {importer}) needs {rel}, which the context's hybridml/ lacks")
        if (REPO / _module_files(module)[-1]).exists():
            todo += [(m, module) for m in sorted(_project_imports(REPO / _module_files(module)[-1]))]
    allowed = {"workloads/__init__.py"} | {p.relative_to(REPO).as_posix() for p in (REPO / "workloads/streaming").glob("*.py")}
    out += [f"context hybridml/{rel} is not part of the job (workloads/streaming and its package __init__)"
            for rel in sorted(shipped - allowed)]

    # python: the venv with PyFlink is what `python` means, of the project's Python
    venv = re.search(r'-m venv (/[^\s;]+)', runs)
    venv_bin = f"{venv[1]}/bin" if venv else None
    path_first = env.get("PATH", "").split(":")[0]
    for key in ("python.executable", "python.client.executable"):
        for exe in sorted({d["spec"]["flinkConfiguration"].get(key, "python") for d in prog.deployments}):  # Flink's default
            if not (exe.startswith(f"{venv_bin}/") if "/" in exe else path_first == venv_bin):
                out.append(f"the FlinkDeployments' {key} is {exe!r}, but the image's PATH starts with {path_first!r}, "
                           f"not the PyFlink venv's {venv_bin}")
    if args.get("PYTHON_VERSION") != prog.python_version or '"python${PYTHON_VERSION}" -m venv' not in runs:
        out.append(f"the venv's Python is build-arg PYTHON_VERSION={args.get('PYTHON_VERSION')} but pyproject.toml "
                   f"requires-python is {prog.python_version}")

    # state: s3:// dirs need Flink's S3 file system plugin
    schemes = {d["spec"]["flinkConfiguration"][k].split("://")[0] for d in prog.deployments for k in flink.STATE_DIR_KEYS}
    if "s3" in schemes and not re.search(r"cp /opt/flink/opt/flink-s3-fs-(presto|hadoop)-\S*\.jar "
                                         r"/opt/flink/plugins/s3-fs-\1/", runs):
        out.append("rendered state dirs are s3:// but the Containerfile enables no S3 plugin in /opt/flink/plugins")

    # the image this builds is the one the FlinkDeployments run, labelled with its version and source
    labels = {k: v for w, r in final if w == "LABEL" for k, v in _pairs(r).items()}
    tag_version = prog.ingest_image.rsplit(":", 1)[-1]
    if labels.get("org.opencontainers.image.version") != "${IMAGE_VERSION}" or args.get("IMAGE_VERSION") != tag_version:
        out.append(f"label org.opencontainers.image.version {_expand(labels.get('org.opencontainers.image.version', ''), args)!r} "
                   f"but Images.feature_ingest is tagged {tag_version}")
    if labels.get("org.opencontainers.image.source") != "${SOURCE}" or not args.get("SOURCE"):
        out.append("label org.opencontainers.image.source is not the build-arg SOURCE (the repository URL)")
    out += [f"the FlinkDeployments run image {image}, not Images.feature_ingest {prog.ingest_image}"
            for image in sorted({d["spec"]["image"] for d in prog.deployments} - {prog.ingest_image})]
    return out


# ---- the tests ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def program() -> Program:
    return _program()


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    ctx = tmp_path_factory.mktemp("job-image") / "context"
    res = subprocess.run([sys.executable, str(SCRIPT), str(ctx), "--source", SOURCE], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, f"scripts/job_image_context.py failed ({res.returncode}):\n{res.stdout}{res.stderr}"
    assert f"--tag {Images().feature_ingest} {ctx}" in res.stdout, res.stdout
    return ctx


def test_the_recipe_matches_the_rendered_flinkdeployments(context, program):
    assert len(program.deployments) >= 3                              # local, dev and prod's streaming views
    found = problems(context, program)
    assert found == [], "the job image's recipe and the program disagree:\n" + "\n".join(found)


def test_the_shipped_copy_alone_runs_the_rendered_job_module_up_to_pyflink(context, program, tmp_path):
    """No site-packages (-S), the repository out of reach (cwd elsewhere): the job module of the rendered args, from the
    context's copy, parses the rendered arguments and stops only at PyFlink's import (the image's venv provides it)."""
    job_args = program.deployments[0]["spec"]["job"]["args"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(context / "hybridml")}
    run = subprocess.run([sys.executable, "-S", "-m", job_args[1], *job_args[2:]], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 1 and run.stderr.strip().splitlines()[-1] == "ModuleNotFoundError: No module named 'pyflink'", \
        run.stderr[-2000:]
    assert f'File "{context}/hybridml/workloads/streaming/job.py"' in run.stderr   # the copy ran, not the repository's
    bad = subprocess.run([sys.executable, "-S", "-m", job_args[1], *job_args[2:], "--push-slots", "x"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "bad argument" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def _edit(rel: str, old: str, new: str):
    def mutate(ctx: Path, prog: Program) -> Program:
        path = ctx / rel
        text = path.read_text()
        assert old in text, f"mutation: {old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1))
        return prog
    return mutate


def _prog(**changes):
    return lambda ctx, prog: dataclasses.replace(prog, **changes)


def _job(change):
    def mutate(ctx: Path, prog: Program) -> Program:
        deployments = copy.deepcopy(list(prog.deployments))
        for d in deployments:
            change(d["spec"])
        return dataclasses.replace(prog, deployments=tuple(deployments))
    return mutate


def _remove(rel: str):
    def mutate(ctx: Path, prog: Program) -> Program:
        (ctx / rel).unlink()
        return prog
    return mutate


def _add(rel: str):
    def mutate(ctx: Path, prog: Program) -> Program:
        shutil.copyfile(REPO / rel, ctx / "hybridml" / rel)
        return prog
    return mutate


DRIFTS = {
    "a stage from another base": (_edit("Containerfile", "FROM ${FLINK_IMAGE} AS connector", "FROM maven:3.9.11 AS connector"),
                                  "Containerfile FROM maven:3.9.11"),
    "Images.flink moved on": (_prog(flink_image="flink:1.20.4-scala_2.12-java17"), "Images.flink is flink:1.20.4"),
    "the apache-flink pin moved on": (_prog(apache_flink_pin="1.20.2"), "apache-flink pin of scripts/flink_venv.sh 1.20.2"),
    "the jarURI names another Flink": (_job(lambda s: s["job"].update(jarURI="local:///opt/flink/opt/flink-python-1.20.2.jar")),
                                       "rendered jarURI 1.20.2"),
    "the connector moved on": (_prog(connector_version="3.3.0-1.20"), "tools/kafka_rig.py CONNECTOR_VERSION is 3.3.0-1.20"),
    "a hand-edited pom": (_edit("connector/pom.xml", "<version>0</version>", "<version>1</version>"), "connector/pom.xml"),
    "the image runs as another user": (_edit("build-args", "RUN_UID=10001", "RUN_UID=9999"), "pods run as 10001:10001"),
    "a module the job imports is missing": (_remove("hybridml/workloads/streaming/rows.py"),
                                            "workloads.streaming.rows (imported by workloads.streaming.job)"),
    "more of the repository is shipped": (_add("workloads/images.py"), "hybridml/workloads/images.py is not part of the job"),
    "the rendered module is not shipped": (_job(lambda s: s["job"]["args"].__setitem__(1, "workloads.streaming.main")),
                                           "needs workloads/streaming/main.py"),
    "python is not the venv's": (_edit("Containerfile", "ENV PATH=/opt/pyflink/bin:$PATH", "ENV PATH=$PATH:/opt/pyflink/bin"),
                                 "python.client.executable is 'python', but the image's PATH starts with '$PATH'"),
    "the project's Python moved on": (_prog(python_version="3.12"), "requires-python is 3.12"),
    "no S3 plugin": (_edit("Containerfile", "cp /opt/flink/opt/flink-s3-fs-presto-", "ls /opt/flink/opt/flink-s3-fs-presto-"),
                     "enables no S3 plugin"),
    "a build-arg left out": (_edit("build-args", f"SOURCE={SOURCE}\n", ""), "ARG SOURCE has no value"),
    "the FlinkDeployment runs another image": (_prog(ingest_image="ghcr.io/hybridml/feature-ingest:0.2.0-flink1.20.3"),
                                               "Images.feature_ingest is tagged 0.2.0-flink1.20.3"),
}


@pytest.mark.parametrize("drift", DRIFTS)
def test_a_drifted_recipe_is_named(drift, context, program, tmp_path):
    mutate, expected = DRIFTS[drift]
    ctx = shutil.copytree(context, tmp_path / "context")
    found = problems(ctx, mutate(ctx, program))
    assert any(expected in p for p in found), f"{drift}: expected a problem naming {expected!r}, got {found}"


def test_the_context_script_refuses_a_used_folder(tmp_path):
    (tmp_path / "left-over").write_text("x")
    res = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--source", SOURCE], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and res.stderr == f"job_image_context: {tmp_path}: not an empty folder (the context is written fresh)\n"
