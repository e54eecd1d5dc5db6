"""The one Kubernetes vocabulary below every room: taints, resource quantities and kwok Node objects.

Label keys live in `infra.labels`; this module holds the parsing and building that several rooms need
(the datacenter inventory, the local control planes, fleet status, the Pulumi components) so each
exists once and agrees with itself. Pure: no I/O, no Pulumi, no Kubernetes client.

Rules, as the API server has them:
- a taint is written `key[=value]:Effect`; keys may hold `/` but never `:`, values never `:` either,
  so the effect is what follows the **last** colon (a taint without one is `NoSchedule`);
- a quantity is a decimal number with an optional binary (`Ki`..`Ei`), decimal (`n`..`E`) or
  exponent (`e3`) suffix; `63000m` equals `63` and `1179648Mi` equals `1152Gi`.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from infra import labels as L
from infra.errors import InvalidValue

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
DEFAULT_TAINT_EFFECT = "NoSchedule"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str = ""
    effect: str = DEFAULT_TAINT_EFFECT

    def to_k8s(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out

    def __str__(self) -> str:
        return f"{self.key}{'=' + self.value if self.value else ''}:{self.effect}"


def parse_taint(taint: Taint | str | Mapping[str, Any] | Any) -> Taint:
    """A Taint from a Taint, `key[=value][:Effect]`, or a mapping/object with key, value and effect."""
    if isinstance(taint, Taint):
        return taint
    if isinstance(taint, str):
        key_value, colon, effect = taint.rpartition(":")
        if not colon:
            key_value, effect = taint, ""
        key, _, value = key_value.partition("=")
        return Taint(key=key, value=value, effect=effect or DEFAULT_TAINT_EFFECT)
    get = taint.get if isinstance(taint, Mapping) else (lambda k, d=None: getattr(taint, k, d))
    return Taint(key=str(get("key")), value=str(get("value", "") or ""),
                 effect=str(get("effect", DEFAULT_TAINT_EFFECT) or DEFAULT_TAINT_EFFECT))


# --------------------------------------------------------------------------- quantities

_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10) ** 3,
            "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15,
            "E": Decimal(10) ** 18}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
GIB = 2 ** 30


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity ("500m", "16Gi", "1e3", 4) as an exact number in base units.

    Raises InvalidValue (a ValueError) on anything else (booleans, non-finite numbers, unknown suffixes)."""
    if isinstance(value, bool) or value is None:
        raise InvalidValue(f"not a Kubernetes quantity: {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidValue(f"not a Kubernetes quantity: {value!r}")
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise InvalidValue(f"not a Kubernetes quantity: {value!r}")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimal numbers
        raise InvalidValue(f"not a Kubernetes quantity: {value!r}") from None
    suffix = match.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * Decimal(10) ** int(suffix[1:])


def quantity_or_none(value: Any) -> Decimal | None:
    """parse_quantity, or None where the value is not a quantity."""
    try:
        return parse_quantity(value)
    except ValueError:
        return None


def quantity_value(value: Any) -> float:
    """A quantity as a float in base units, 0 for a missing/empty value (what requests sums need)."""
    if value is None or value == "":
        return 0.0
    return float(parse_quantity(value))


def same_quantity(a: Any, b: Any) -> bool:
    """Whether two quantities are equal as numbers ("63000m" == "63"); plain equality if either is not one."""
    qa, qb = quantity_or_none(a), quantity_or_none(b)
    return a == b if qa is None or qb is None else qa == qb


def cpu_quantity(cores: float) -> str:
    """Cores as the API server writes them: whole cores plain ("4"), else millicores ("1500m")."""
    milli = round(cores * 1000)
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity_mib(mib: int) -> str:
    """MiB as a quantity: whole GiB as "16Gi", else "1536Mi"."""
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


# --------------------------------------------------------------------------- kwok nodes

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_TYPE_LABEL = "type"   # kwok's own stages select on `type: kwok`
SIMULATED_NODE_INFO = {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake",
                       "kubeProxyVersion": "fake"}


def kwok_node(name: str, *, labels: Mapping[str, str] | None = None, taints: Iterable[Any] = (),
              capacity: Mapping[str, Any], allocatable: Mapping[str, Any] | None = None,
              annotations: Mapping[str, str] | None = None, addresses: Iterable[Mapping[str, str]] = (),
              node_info: Mapping[str, str] | None = None, gpus: int = 0, gpu_type: str | None = None
              ) -> dict[str, Any]:
    """A Node object kwok simulates: the well-known labels, `labels`, taints (any form parse_taint reads),
    capacity and allocatable (allocatable defaults to capacity). `gpus` > 0 adds the `nvidia.com/gpu`
    resource to both, and `gpu_type` the GPU feature-discovery product label, so every builder gives GPU
    nodes the same shape."""
    node_labels = {L.KWOK_TYPE: "kwok", L.HOSTNAME: name, L.OS: "linux", L.ARCH: "amd64"}
    node_labels.update(labels or {})
    cap = {str(k): str(v) for k, v in capacity.items() if v is not None}
    alloc = {str(k): str(v) for k, v in (allocatable if allocatable is not None else capacity).items()
             if v is not None}
    if gpus:
        cap[L.GPU_RESOURCE] = alloc[L.GPU_RESOURCE] = str(gpus)
    if gpu_type:
        node_labels[L.GPU_PRODUCT] = L.gpu_product(gpu_type)
    status: dict[str, Any] = {"capacity": cap, "allocatable": alloc,
                              "nodeInfo": dict(node_info if node_info is not None else SIMULATED_NODE_INFO)}
    if addresses:
        status["addresses"] = [dict(a) for a in addresses]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0",
                            **(annotations or {})},
        },
        "spec": {"taints": [parse_taint(t).to_k8s() for t in taints]},
        "status": status,
    }


def machine_id(*parts: str) -> str:
    """A stable 32-hex machine id for a simulated node (the same host gets the same id on every run)."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]
