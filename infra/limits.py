"""Input limits: the most a spec (or another YAML input) may hold, so that no input, however malformed or
hostile, costs unbounded time or memory before it is refused with a SpecError.

Pure constants and helpers, importing nothing of ours: `infra.spec` uses the bounds in its fields,
`infra.loader` the file and YAML limits, `infra.bounds` the fleet-wide ones. The shipped prod spec is ~140 KB, ~16k YAML nodes, 8 levels
deep, ~1,200 hosts: every limit is far above it. README "Input limits" lists them.
"""
from __future__ import annotations

import ipaddress

MIB = 1024 * 1024

# ---- the file and its YAML
MAX_INPUT_BYTES = 16 * MIB        # a spec or overrides file; prod is ~0.14 MiB
MAX_YAML_NODES = 500_000          # scalars, sequences and mappings, an alias counting as the nodes it stands for
MAX_YAML_DEPTH = 32               # nesting of mappings and sequences; prod nests 8 deep

# ---- values
MAX_STRING = 4096                 # characters of any string in a spec model
MAX_QUANTITY = 1e9                # any float: GiB, USD/h, requests/s, ms, cores
MAX_CORES = 4096                  # cores of a host, vCPUs of an instance type
MAX_COUNT = 1_000_000             # node counts, vCPU quotas, batch sizes, queue depths
MAX_REPLICAS = 100_000            # replicas one pipeline may need (demand / usable capacity, min_replicas)
MAX_HOSTS = 100_000               # hosts of an environment, pools expanded
MAX_TOKENS_PER_MINUTE = 10**12
MAX_TTL_SECONDS = 10 * 365 * 86400
MAX_MODEL_LEN = 16 * MIB          # tokens

# ---- addresses a host may not have: (first, last, why), as integers
_UNUSABLE: tuple[tuple[int, int, str], ...] = tuple(
    (int(net.network_address), int(net.broadcast_address), why)
    for net, why in ((ipaddress.IPv4Network("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
                     (ipaddress.IPv4Network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
                     (ipaddress.IPv4Network("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
                     (ipaddress.IPv4Network("240.0.0.0/4"), "reserved or broadcast (240.0.0.0/4)")))
LAST_IPV4 = 0xFFFFFFFF


def unusable_addresses(first: int, last: int) -> str | None:
    """Why the IPv4 range first..last (integers) holds an address no host may have; None when it is fine."""
    for lo, hi, why in _UNUSABLE:
        if first <= hi and lo <= last:
            return f"{ipaddress.IPv4Address(max(first, lo))} is {why}, not a host address"
    return None


def fmt_bytes(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n:,} bytes"

