"""Offline preview of a sharded environment: every site stack and the fleet stack, in worker processes.

`hybridml up ENV` deploys an environment as one stack per site plus the fleet stack (hybridml/ops/shards.py);
this previews exactly those stacks under Pulumi's mocks, as `run_preview` does for one stack, with
the site stacks spread over a pool of processes (the SDK's registration is single-threaded Python, so
processes are what use more than one core). The plan is solved once, here, and handed to every
stack as `hybridml:plan`, as the rollout does. The fleet stack runs last: its stack references are
answered with the site stacks' own previewed outputs.

Each stack runs in a process forked after the program's modules are imported and the plan solved, so
a stack costs its build only; a process that does not answer in time is killed, its stack reported failed.
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from pathlib import Path
from typing import Any, cast

from hybridml.ops.shards import largest_first, stack_specs
from hybridml.stack.config import PLAN, SITES

# what a site stack exports that the fleet stack reads (program.run_fleet)
FLEET_INPUT_EXPORTS = ("fleet_members", "plan_digest")
# A prod site stack takes seconds; a process silent for this long is stuck (a forked process can inherit a
# lock another thread held), and the preview kills it and fails that stack instead of hanging.
STACK_TIMEOUT_S = 300.0


@dataclass
class StackPreview:
    """What one stack's preview reports back to the parent (picklable: no Pulumi objects)."""

    stack: str
    role: str
    sites: list[str]
    count: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)   # cluster -> type -> n
    build_start: float = 0.0     # wall clock (time.time) so stacks of different processes compare
    build_end: float = 0.0
    cpu_seconds: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)   # exports the fleet stack reads, resolved
    secret_outputs: list[str] = field(default_factory=list)
    manifests: dict[str, list[dict]] | None = None           # cluster -> Kubernetes objects (with --out)
    error: str | None = None


@dataclass
class ShardedPreviewResult:
    environment: str
    sites: list[str]
    stacks: list[StackPreview]
    workers: int
    plan_seconds: float
    build_seconds: float      # wall: forking the workers to the last stack's end (each stack's spec and
                              # plan loading and the fleet stack's wait for the site stacks included)
    total_seconds: float

    @property
    def count(self) -> int:
        return sum(s.count for s in self.stacks)

    @property
    def resources_per_second(self) -> float:
        return self.count / self.build_seconds if self.build_seconds else float("inf")

    @property
    def resources_per_cpu_second(self) -> float:
        cpu = sum(s.cpu_seconds for s in self.stacks)
        return self.count / cpu if cpu else float("inf")

    @property
    def failed(self) -> list[StackPreview]:
        return [s for s in self.stacks if s.error]

    def counts(self) -> dict[str, Counter]:
        out: dict[str, Counter] = defaultdict(Counter)
        for stack in self.stacks:
            for cluster, types in stack.counts.items():
                if stack.role == "fleet" and cluster not in self.sites:
                    cluster = f"(fleet stack {stack.stack})"   # its own component belongs to no single cluster
                out[cluster].update(types)
        return out

    def manifests(self) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = defaultdict(list)
        for stack in self.stacks:
            for cluster, docs in (stack.manifests or {}).items():
                out[cluster].extend(docs)
        return out


def _preview_stack(job: dict) -> StackPreview:
    """One stack under mocks, in a worker process."""
    from hybridml.ops.preview import resolved_exports, run_preview

    outcome = StackPreview(stack=job["stack"], role=job["role"], sites=list(job["sites"]))
    try:
        result = run_preview(job["spec"], mode=job["mode"], sites=list(job["sites"]) if job["role"] == "site" else None,
                             plan_file=job["plan_file"],
                             stack=job["stack"], config=job["config"], stack_outputs=job.get("stack_outputs"))
    except Exception as exc:  # noqa: BLE001 - reported per stack; the other stacks go on
        outcome.error = f"{type(exc).__name__}: {exc}"
        return outcome
    outcome.count = result.count
    outcome.counts = {cluster: dict(types) for cluster, types in result.counts().items()}
    outcome.build_start, outcome.build_end = result.build_started_at, result.build_started_at + result.build_seconds
    outcome.cpu_seconds = result.build_cpu_seconds
    if job["role"] == "site":
        outcome.outputs, outcome.secret_outputs = resolved_exports(result, FLEET_INPUT_EXPORTS)
    if job["want_manifests"]:
        outcome.manifests = result.kubernetes_manifests()
    return outcome


def _failed(job: dict, error: str) -> StackPreview:
    return StackPreview(stack=job["stack"], role=job["role"], sites=list(job["sites"]), error=error)


def _stack_process(job: dict, conn) -> None:
    try:
        outcome = _preview_stack(job)
    except BaseException as exc:  # noqa: BLE001 - whatever happens, the parent hears of it
        outcome = _failed(job, f"{type(exc).__name__}: {exc}")
    conn.send(outcome)
    conn.close()


def _run_forked(jobs: list[dict], slots: int, timeout: float) -> Iterator[StackPreview]:
    """Run each job in a process of its own, forked from this one (the program already imported, the plan
    solved), at most `slots` at a time; yield outcomes as they finish. A process that has not answered
    `timeout` seconds after it started is killed (SIGKILL: a forked child may have inherited a signal
    handler or a lock that keeps it from dying of SIGTERM) and its stack reported failed."""
    ctx = multiprocessing.get_context("fork")
    pending = list(jobs)
    running: dict[Any, tuple[dict, Any, float]] = {}   # read end -> (job, process, deadline)
    try:
        while pending or running:
            while pending and len(running) < slots:
                job = pending.pop(0)
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_stack_process, args=(job, writer), daemon=True)
                proc.start()
                writer.close()
                running[reader] = (job, proc, time.monotonic() + timeout)
            soonest = min(deadline for _, _, deadline in running.values())
            for ready in mp_connection.wait(list(running), timeout=max(0.0, soonest - time.monotonic())):
                reader = cast(mp_connection.Connection, ready)   # wait() hands back the read ends it was given
                job, proc, _ = running.pop(reader)
                try:
                    outcome = reader.recv()
                except EOFError:   # died without a word (killed, out of memory)
                    proc.join()
                    outcome = _failed(job, f"the preview process exited with code {proc.exitcode}")
                reader.close()
                proc.join()
                yield outcome
            now = time.monotonic()
            for reader, (job, proc, deadline) in list(running.items()):
                if now >= deadline:
                    del running[reader]
                    proc.kill()
                    proc.join()
                    reader.close()
                    yield _failed(job, f"no result within {timeout:.0f} s (stuck process killed)")
    finally:   # interrupted (Ctrl-C, an exception in a callback): leave no process behind
        for reader, (_, proc, _) in running.items():
            proc.kill()
            proc.join()
            reader.close()


def run_sharded_preview(spec: str, *, mode: str = "cloud", sites: list[str] | None = None,
                        plan_file: str | None = None, workers: int | None = None, want_manifests: bool = False,
                        on_stack_done: Callable[[StackPreview], None] | None = None,
                        on_stacks: Callable[[int], None] | None = None,
                        stack_timeout: float = STACK_TIMEOUT_S) -> ShardedPreviewResult:
    """Preview the stacks `hybridml up` would deploy for SPEC: the (selected) site stacks in a pool of
    `workers` processes (default: one per CPU this process may use, at most one per stack), then the fleet stack."""
    from hybridml import program
    from hybridml.ops import preview as _preview
    from infra.loader import load_environment
    from policies.placement.plan import PlacementPlan

    t0 = time.perf_counter()
    program.import_components()   # before forking: no worker pays for them
    env = load_environment(spec)
    t_plan = time.perf_counter()
    plan: PlacementPlan = program.load_plan(env, plan_file)
    plan_seconds = time.perf_counter() - t_plan
    used = plan.used_sites()
    selected = program.select_sites(env, plan, tuple(sites) if sites else None)

    with tempfile.TemporaryDirectory(prefix="hybridml-preview-") as tmp:
        plan_path = plan_file or str(Path(tmp) / f"{env.name}-plan.json")
        if not plan_file:
            Path(plan_path).write_text(plan.model_dump_json())
        # The fleet stack reads every used site's stack: offline there is nothing to read for a site
        # this run does not preview, so a partial selection previews its site stacks only.
        specs = stack_specs(env.name, used, selected, plan_path, {}, with_fleet=set(used) <= set(selected))
        specs = largest_first(specs, plan.site_sizes())
        if on_stacks:
            on_stacks(len(specs))
        site_jobs: list[dict[str, Any]] = []
        fleet_jobs: list[dict[str, Any]] = []
        for stack_spec in specs:
            config = {k: v.value for k, v in stack_spec.config.items()
                      if k not in (PLAN, SITES)}
            job = {"spec": spec, "mode": mode, "plan_file": plan_path, "stack": stack_spec.name,
                   "role": stack_spec.role, "sites": stack_spec.sites, "config": config,
                   "want_manifests": want_manifests}
            (site_jobs if stack_spec.role == "site" else fleet_jobs).append(job)

        n_workers = max(1, min(workers or len(os.sched_getaffinity(0)), len(site_jobs)))
        done: list[StackPreview] = []

        def report(outcome: StackPreview) -> None:
            done.append(outcome)
            if on_stack_done:
                on_stack_done(outcome)

        forked_at = time.time()
        for outcome in _run_forked(site_jobs, n_workers, stack_timeout):
            report(outcome)
        for job in fleet_jobs:
            failed = sorted(o.stack for o in done if o.error)
            if failed:   # as `hybridml up` does: the fleet stack reads every site stack
                report(_failed(job, f"not previewed: its site stacks failed ({', '.join(failed)})"))
                continue
            org_project = f"{_preview.ORGANIZATION}/{_preview.PROJECT}"
            stack_outputs = {f"{org_project}/{o.stack}": (o.outputs, o.secret_outputs) for o in done if not o.error}
            for outcome in _run_forked([{**job, "stack_outputs": stack_outputs}], 1, stack_timeout):
                report(outcome)
    ok = [o for o in done if not o.error]
    build = (max(o.build_end for o in ok) - forked_at) if ok else 0.0
    order = {s.name: i for i, s in enumerate(specs)}
    return ShardedPreviewResult(environment=env.name, sites=selected, workers=n_workers,
                                stacks=sorted(done, key=lambda o: order[o.stack]), plan_seconds=plan_seconds,
                                build_seconds=build, total_seconds=time.perf_counter() - t0)
