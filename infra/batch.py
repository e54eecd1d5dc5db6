"""Batch inference pipelines (`batch:` of a spec): offline work on Ray, placed on the capacity the online peak leaves.

A batch pipeline reads a dataset, runs a model over every item (vLLM offline inference through Ray Data, or a CPU
model in an image of its own) and writes the results: `size.items` items before a deadline (`deadline_hours`
after it starts) or on a recurrence (`schedule`, a cron expression; each run must finish before the next
starts). Its workers are Ray worker pods of `resources` each; `throughput_per_worker` says how fast one
processes. Placement (`policies/placement/batch.py`) chooses how many workers run where. Spot prices of cloud
instance types live here too (`batch.spot_hourly_usd`): the online plan buys on-demand capacity only.

Imported by `infra.spec` (the models, re-exported) and `infra.references` (`check_batch`); imports nothing of ours
but the base model and the limits (the spec is seen through the `Environment` protocol, so the two modules do not
import each other). The tier is its name here (`privacy_tier`); `infra.spec.PrivacyTier(b.privacy_tier)` is the enum.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Annotated, Any, Literal, Protocol, Self

from pydantic import AfterValidator, Field, model_validator

from infra import limits
from infra.model import StrictModel

TierName = Literal["public", "internal", "pii", "restricted"]
BatchName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", min_length=1, max_length=40)]
DatasetUri = Annotated[str, Field(pattern=r"^(s3|gs|file)://\S+$", description="s3://, gs:// or file:// URI.")]
Positive = Annotated[float, Field(gt=0, le=limits.MAX_QUANTITY)]
MAX_ITEMS = 10**12
MAX_DEADLINE_HOURS = 24 * 366


# --------------------------------------------------------------------------- cron

CRON_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
               "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# field name, low, high, names (index + low = value)
_FIELDS = (("minute", 0, 59, None), ("hour", 0, 23, None), ("day of month", 1, 31, None), ("month", 1, 12, _MONTHS),
           ("day of week", 0, 7, _DAYS))
CRON_WINDOW_DAYS = 8 * 366   # runs are enumerated over eight years: a Feb 29 schedule runs at least twice


def _cron_value(text: str, field: str, low: int, names: list[str] | None) -> int:
    if names and text.lower() in names:
        return names.index(text.lower()) + low
    if not text.isdigit():
        raise ValueError(f"{field}: {text!r} is not a number" + (f" or a name ({', '.join(names)})" if names else ""))
    return int(text)


def _cron_field(text: str, field: str, low: int, high: int, names: list[str] | None) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            first, last = _cron_value(a, field, low, names), _cron_value(b, field, low, names)
        else:
            first = _cron_value(body, field, low, names)
            last = high if step_text else first
        if not (low <= first <= high and low <= last <= high) or first > last:
            raise ValueError(f"{field}: {part!r} is outside {low}-{high}")
        out.update(range(first, last + 1, step))
    return out


@lru_cache(maxsize=256)
def cron_gap_minutes(expression: str) -> int:
    """The shortest time between two runs of a cron schedule (5 fields, or a macro such as @daily), in minutes.
    Raises ValueError for a malformed expression or one that never runs."""
    text = CRON_MACROS.get(expression.strip(), expression.strip())
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"a cron schedule has 5 fields (minute hour day-of-month month day-of-week) or is one of "
                         f"{', '.join(CRON_MACROS)}; got {len(parts)} field(s) in {expression!r}")
    minutes, hours, doms, months, dows = (_cron_field(p, name, lo, hi, names)
                                          for p, (name, lo, hi, names) in zip(parts, _FIELDS, strict=True))
    dows = {d % 7 for d in dows}
    times = sorted(h * 60 + m for h in hours for m in minutes)
    dom_any, dow_any = parts[2].startswith("*"), parts[4].startswith("*")
    start = dt.date(2024, 1, 1)
    days = []
    for i in range(CRON_WINDOW_DAYS):
        day = start + dt.timedelta(days=i)
        if day.month not in months:
            continue
        dom_ok, dow_ok = day.day in doms, day.isoweekday() % 7 in dows
        if (dom_ok and dow_ok) if (dom_any or dow_any) else (dom_ok or dow_ok):
            days.append(i)
    if not days:
        raise ValueError(f"{expression!r} never runs (no day matches its day-of-month, month and day-of-week)")
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    gaps += [(b - a) * 1440 + times[0] - times[-1] for a, b in zip(days, days[1:], strict=False)]
    return min(gaps) if gaps else CRON_WINDOW_DAYS * 1440


def _cron(value: str) -> str:
    cron_gap_minutes(value)
    return value


Cron = Annotated[str, Field(max_length=200), AfterValidator(_cron)]


# --------------------------------------------------------------------------- models


class VllmBatchEngine(StrictModel):
    """vLLM offline inference through Ray Data (`ray.data.llm`): one vLLM engine per worker."""

    kind: Literal["vllm"] = "vllm"
    tensor_parallel: Annotated[int, Field(ge=1, le=16)] = Field(
        default=1, description="GPUs of one worker's engine; must equal resources.gpu.count. Default 1.")
    max_model_len: Annotated[int, Field(ge=256, le=limits.MAX_MODEL_LEN)] = 8192
    gpu_memory_utilization: Annotated[float, Field(gt=0.1, le=0.98)] = 0.9
    batch_size: Annotated[int, Field(ge=1, le=limits.MAX_COUNT)] = Field(default=64, description="Ray Data batch size. Default 64.")
    max_tokens: Annotated[int, Field(ge=1, le=limits.MAX_MODEL_LEN)] = Field(
        default=512, description="Output tokens per item at most. Default 512.")


class CpuBatchEngine(StrictModel):
    """A CPU model in an image of its own (with Ray installed): Ray runs `entrypoint` in it."""

    kind: Literal["cpu"] = "cpu"
    image: str = Field(description="Container image with Ray and the model code, an explicit tag or digest.")
    entrypoint: str = Field(default="python -m hybridml_batch", description=(
        "Command the Ray job runs on the head; it reads HYBRIDML_BATCH_* variables (README, Batch inference on Ray). "
        "Default `python -m hybridml_batch`."))
    batch_size: Annotated[int, Field(ge=1, le=limits.MAX_COUNT)] = 256


BatchEngine = Annotated[VllmBatchEngine | CpuBatchEngine, Field(discriminator="kind")]


class BatchSize(StrictModel):
    items: Annotated[int, Field(ge=1, le=MAX_ITEMS)] = Field(description="Items (rows) of one run.")
    tokens_per_item: Annotated[int, Field(ge=1, le=limits.MAX_MODEL_LEN)] | None = Field(
        default=None, description="Tokens one item costs (prompt + output); needed with throughput in tokens_per_s.")


class Throughput(StrictModel):
    """What one worker processes: items per second or tokens per second (exactly one)."""

    items_per_s: Positive | None = None
    tokens_per_s: Positive | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.items_per_s is None) == (self.tokens_per_s is None):
            raise ValueError("set exactly one of items_per_s or tokens_per_s")
        return self


class BatchGpu(StrictModel):
    type: str = Field(description="GPU type name used across the spec (H100, L4, ...).")
    count: Annotated[int, Field(ge=1, le=16)]


class WorkerResources(StrictModel):
    """One Ray worker pod's requests (= limits)."""

    cpu: Positive
    memory_gib: Positive
    gpu: BatchGpu | None = None


class HeadResources(StrictModel):
    """The Ray head pod (driver, object store directory, dashboard): no GPU."""

    cpu: Positive = Field(default=2, description="Default 2.")
    memory_gib: Positive = Field(default=8, description="Default 8 GiB.")


class BatchPipeline(StrictModel):
    """A batch inference pipeline: a dataset through a model on Ray, before a deadline or on a schedule."""

    name: BatchName
    description: str = ""
    engine: BatchEngine
    model: str = Field(description="Model artifact: hub id or storage URI.")
    input: DatasetUri = Field(description="Dataset read (parquet): s3://, gs:// or file:// URI.")
    output: DatasetUri = Field(description="Where the results are written (parquet): s3://, gs:// or file:// URI.")
    size: BatchSize
    throughput_per_worker: Throughput
    deadline_hours: Annotated[float, Field(gt=0, le=MAX_DEADLINE_HOURS)] | None = Field(
        default=None, description="A run finishes within this many hours of its start. Default (with a schedule): the "
        "shortest time between two runs, so runs never overlap.")
    schedule: Cron | None = Field(default=None, description="Recurrence (cron, UTC, or @daily/@hourly/...). Default: "
                                  "a one-off job (then deadline_hours is required).")
    privacy_tier: TierName = "internal"
    allowed_jurisdictions: list[str] | None = Field(
        default=None, description="Where the data may be processed (site jurisdictions); required for pii/restricted. "
        "Default (public/internal): anywhere.")
    resources: WorkerResources
    head: HeadResources = Field(default_factory=HeadResources)
    spot: bool = Field(default=False, description="Workers may run on spot capacity (cloud instance types with a spot "
                       "price in batch.spot_hourly_usd). Default false.")
    min_workers: Annotated[int, Field(ge=1, le=limits.MAX_REPLICAS)] = 1
    max_workers: Annotated[int, Field(ge=1, le=limits.MAX_REPLICAS)] = Field(
        default=256, description="Workers of one run at most, over every site. Default 256.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.deadline_hours is None and self.schedule is None:
            raise ValueError("set deadline_hours (a one-off job) or schedule (a recurrence), or both")
        if self.schedule is not None and self.deadline_hours is not None:
            gap = cron_gap_minutes(self.schedule) / 60
            if self.deadline_hours > gap + 1e-9:
                raise ValueError(f"deadline_hours {self.deadline_hours:g} is longer than the {gap:g} h between two runs "
                                 f"of schedule {self.schedule!r}: runs would overlap")
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers ({self.min_workers}) exceeds max_workers ({self.max_workers})")
        if self.throughput_per_worker.tokens_per_s is not None and self.size.tokens_per_item is None:
            raise ValueError("throughput_per_worker.tokens_per_s needs size.tokens_per_item (tokens one item costs)")
        if self.input == self.output:
            raise ValueError("input and output are the same dataset: a run would overwrite what it reads")
        return self

    @property
    def window_hours(self) -> float:
        """Hours a run may take: `deadline_hours`, else the shortest time between two runs of `schedule`."""
        if self.deadline_hours is not None:
            return self.deadline_hours
        assert self.schedule is not None  # the validator asks for one of the two
        return cron_gap_minutes(self.schedule) / 60

    @property
    def items_per_worker_second(self) -> float:
        t = self.throughput_per_worker
        if t.items_per_s is not None:
            return t.items_per_s
        assert t.tokens_per_s is not None and self.size.tokens_per_item is not None
        return t.tokens_per_s / self.size.tokens_per_item

    @property
    def needed_items_per_s(self) -> float:
        """The throughput that finishes a run's items within its window."""
        return self.size.items / (self.window_hours * 3600)

    @property
    def worker_hours(self) -> float:
        """Worker-hours one run takes at the planned throughput."""
        return self.size.items / self.items_per_worker_second / 3600

    @property
    def min_workers_for_deadline(self) -> int:
        return max(self.min_workers, math.ceil(self.needed_items_per_s / self.items_per_worker_second - 1e-9))


class BatchWork(StrictModel):
    """The `batch:` section: batch pipelines, and spot prices for their cloud workers."""

    pipelines: list[BatchPipeline] = Field(default_factory=list)
    spot_hourly_usd: dict[str, dict[str, Positive]] = Field(
        default_factory=dict, description="cloud site -> instance type -> spot price per instance-hour (the type must "
        "list `spot` in capacity_types). Default none: batch workers run on-demand.")

    def pipeline(self, name: str) -> BatchPipeline:
        return next(b for b in self.pipelines if b.name == name)


# --------------------------------------------------------------------------- checks across the spec


def _image_problem(image: str) -> str | None:
    if ":" not in image.rsplit("/", 1)[-1] and "@" not in image:
        return f"image {image!r} has no tag or digest"
    if image.endswith(":latest"):
        return f"image {image!r} uses the mutable tag 'latest'"
    return None


class Environment(Protocol):
    """What the checks read of an `infra.spec.Environment` (sites are cloud sites or datacenters, told by `kind`)."""

    @property
    def sites(self) -> Sequence[Any]: ...

    @property
    def pipelines(self) -> Sequence[Any]: ...

    @property
    def batch(self) -> BatchWork: ...

    def gpu_types(self) -> set[str]: ...


def _gpu_shapes(site: Any) -> list[Any]:
    if site.kind == "cloud":
        return [it.gpu for it in site.instance_types if it.gpu]
    return [h.gpu for _, h in site.all_hosts() if h.gpu]


def check_batch(env: Environment) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of the `batch` section against the rest of the spec: (path, message)."""
    out: list[tuple[tuple[str | int, ...], str]] = []
    gpu_types = env.gpu_types()
    widest: dict[str, int] = {}
    for site in env.sites:
        for shape in _gpu_shapes(site):
            widest[shape.type] = max(widest.get(shape.type, 0), shape.count)
    jurisdictions = {s.jurisdiction for s in env.sites}
    online = {p.name for p in env.pipelines}
    first: dict[str, int] = {}
    for bi, b in enumerate(env.batch.pipelines):
        base: tuple[str | int, ...] = ("batch", "pipelines", bi)
        if b.name in first:
            out.append((base + ("name",), f"duplicate batch pipeline name {b.name!r} (first at batch.pipelines[{first[b.name]}])"))
        first.setdefault(b.name, bi)
        if b.name in online:
            out.append((base + ("name",), f"{b.name!r} is also an online pipeline's name: names are shared (plan, "
                                          "--explain, Kubernetes objects)"))
        gpu = b.resources.gpu
        if b.engine.kind == "vllm":
            if gpu is None:
                out.append((base + ("resources", "gpu"), "a vllm batch pipeline needs a GPU per worker"))
            elif gpu.count != b.engine.tensor_parallel:
                out.append((base + ("resources", "gpu", "count"), f"GPU count {gpu.count} must equal the engine's "
                                                                  f"tensor_parallel ({b.engine.tensor_parallel})"))
        else:
            if gpu is not None:
                out.append((base + ("resources", "gpu"), "a cpu batch pipeline must not request GPUs (use engine vllm)"))
            why = _image_problem(b.engine.image)
            if why:
                out.append((base + ("engine", "image"), why))
        if gpu is not None:
            if gpu.type not in gpu_types:
                out.append((base + ("resources", "gpu", "type"), f"GPU type {gpu.type!r} is offered by no site "
                                                                 f"(known: {', '.join(sorted(gpu_types)) or 'none'})"))
            elif gpu.count > widest.get(gpu.type, 0):
                out.append((base + ("resources", "gpu", "count"), f"a worker's {gpu.count} {gpu.type} GPUs fit no node: "
                                                                  f"the largest has {widest[gpu.type]}"))
        for ji, j in enumerate(b.allowed_jurisdictions or []):
            if j not in jurisdictions:
                out.append((base + ("allowed_jurisdictions", ji), f"unknown jurisdiction {j!r} (sites are in "
                                                                  f"{', '.join(sorted(jurisdictions))})"))
        if b.privacy_tier in ("pii", "restricted") and b.allowed_jurisdictions is None:
            out.append((base + ("allowed_jurisdictions",), f"{b.privacy_tier} data must say where it may be processed: "
                                                           "list the jurisdictions (e.g. [US])"))
    for site_name, prices in env.batch.spot_hourly_usd.items():
        path: tuple[str | int, ...] = ("batch", "spot_hourly_usd", site_name)
        found = next((s for s in env.sites if s.name == site_name), None)
        if found is None or found.kind != "cloud":
            out.append((path, f"{site_name!r} is not a cloud site of the spec" if found is None else
                        f"{site_name!r} is a datacenter: spot prices are for cloud instance types"))
            continue
        types = {it.name: it for it in found.instance_types}
        for it_name in prices:
            it = types.get(it_name)
            if it is None:
                out.append((path + (it_name,), f"{site_name} offers no instance type {it_name!r}"))
            elif "spot" not in it.capacity_types:
                out.append((path + (it_name,), f"{it_name} at {site_name} does not list 'spot' in capacity_types"))
    return out
