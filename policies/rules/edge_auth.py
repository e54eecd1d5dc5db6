"""Edge identity (issue 19): every request that enters a gateway is authenticated, and every limit that selects
clients by a header counts the identity the gateway established, not what a client claims.

- `entry-authenticated`: each listener of a Gateway that does not verify client certificates (no ClientTrafficPolicy
  with `tls.clientValidation` on the Gateway or the listener; the fleet gateways verify them: only other sites'
  gateways reach those) is covered by a SecurityPolicy that authenticates (apiKeyAuth, jwt, oidc, basicAuth or
  extAuth): one targeting the Gateway or that listener, or one targeting every route attached to the listener (an
  AIGatewayRoute's generated HTTPRoute has its name). Otherwise anyone reaches those routes, and no tenant limit
  applies to a request that names no tenant.
- `limits-keyed-by-identity`: a BackendTrafficPolicy rate-limit rule (`rateLimit.global|local.rules[]`) that selects
  clients by a request header, on a Gateway of the first kind or routes attached to one, selects on a header that
  the authenticating SecurityPolicy of that Gateway or route writes from the identity (apiKeyAuth
  `forwardClientIDHeader`, jwt `claimToHeaders[].header`, basicAuth `forwardUsernameHeader`): Envoy sets such a header
  after authentication, replacing a client's copy. Any other header is the client's word: a tenant could spend
  another tenant's budget by claiming its name.

Pure: the rendered objects of each cluster. Nothing here is numeric (CrossGuard hands numbers over as floats).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from policies.rules.base import Context, Enforcement, ResourceView, Rule, Severity

AUTH_METHODS = ("apiKeyAuth", "jwt", "oidc", "basicAuth", "extAuth")
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute", "AIGatewayRoute")
GatewayKey = tuple[str | None, str]                  # (namespace, name)


@dataclass
class _Policy:
    namespace: str | None
    targets: list[tuple[str, str, str | None]]       # (kind, name, sectionName)
    identity_headers: set[str]


@dataclass
class _Cluster:
    gateways: dict[GatewayKey, ResourceView] = field(default_factory=dict)
    mtls: set[tuple[str | None, str, str | None]] = field(default_factory=set)       # (ns, gateway, listener|None)
    auth: list[_Policy] = field(default_factory=list)
    routes: dict[tuple[str | None, str], list[tuple[str, str | None]]] = field(default_factory=dict)  # -> parents
    limits: list[ResourceView] = field(default_factory=list)


def _spec(r: ResourceView) -> dict[str, Any]:
    spec = r.props.get("spec")
    return spec if isinstance(spec, dict) else {}


def _ns(r: ResourceView) -> str | None:
    ns = r.metadata.get("namespace")
    return ns if isinstance(ns, str) else None


def _targets(spec: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    refs = list(spec.get("targetRefs") or []) + ([spec["targetRef"]] if isinstance(spec.get("targetRef"), dict) else [])
    return [(str(t.get("kind", "")), str(t.get("name", "")), t.get("sectionName")) for t in refs if isinstance(t, dict)]


def _identity_headers(spec: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    api = spec.get("apiKeyAuth") or {}
    if api.get("forwardClientIDHeader"):
        out.add(str(api["forwardClientIDHeader"]).lower())
    for provider in (spec.get("jwt") or {}).get("providers") or []:
        out |= {str(c["header"]).lower() for c in provider.get("claimToHeaders") or [] if c.get("header")}
    basic = spec.get("basicAuth") or {}
    if basic.get("forwardUsernameHeader"):
        out.add(str(basic["forwardUsernameHeader"]).lower())
    return out


def _clusters(resources: Iterable[ResourceView]) -> dict[str | None, _Cluster]:
    out: dict[str | None, _Cluster] = {}
    for r in resources:
        if not r.is_kubernetes:
            continue
        c = out.setdefault(r.cluster, _Cluster())
        spec, ns = _spec(r), _ns(r)
        if r.kind == "Gateway":
            c.gateways[(ns, str(r.metadata.get("name", "")))] = r
        elif r.kind == "ClientTrafficPolicy" and (spec.get("tls") or {}).get("clientValidation"):
            c.mtls |= {(ns, name, section) for kind, name, section in _targets(spec) if kind == "Gateway"}
        elif r.kind == "SecurityPolicy" and any(spec.get(m) for m in AUTH_METHODS):
            c.auth.append(_Policy(ns, _targets(spec), _identity_headers(spec)))
        elif r.kind in ROUTE_KINDS:
            c.routes[(ns, str(r.metadata.get("name", "")))] = [
                (str(p.get("name", "")), p.get("sectionName")) for p in spec.get("parentRefs") or []
                if isinstance(p, dict) and p.get("kind", "Gateway") == "Gateway" and p.get("namespace", ns) == ns]
        elif r.kind == "BackendTrafficPolicy" and _header_selectors(spec):
            c.limits.append(r)
    return out


def _header_selectors(spec: dict[str, Any]) -> set[str]:
    """Headers the policy's rate-limit rules select clients by (lower case)."""
    out: set[str] = set()
    for scope in ("global", "local"):
        for rule in ((spec.get("rateLimit") or {}).get(scope) or {}).get("rules") or []:
            for sel in rule.get("clientSelectors") or []:
                out |= {str(h["name"]).lower() for h in sel.get("headers") or [] if isinstance(h, dict) and h.get("name")}
    return out


def _listeners(gateway: ResourceView) -> list[str]:
    return [str(lst.get("name", "")) for lst in _spec(gateway).get("listeners") or [] if isinstance(lst, dict)]


def _verifies_clients(c: _Cluster, key: GatewayKey, listener: str | None) -> bool:
    ns, name = key
    return (ns, name, None) in c.mtls or (listener is not None and (ns, name, listener) in c.mtls)


def _gateway_auth(c: _Cluster, key: GatewayKey, listener: str) -> list[_Policy]:
    ns, name = key
    return [p for p in c.auth if p.namespace == ns
            and any(k == "Gateway" and n == name and s in (None, listener) for k, n, s in p.targets)]


def _route_auth(c: _Cluster, ns: str | None, route: str) -> list[_Policy]:
    # an AIGatewayRoute becomes an HTTPRoute of the same name, which is what a SecurityPolicy can target
    return [p for p in c.auth if p.namespace == ns
            and any(k in ("HTTPRoute", "GRPCRoute") and n == route for k, n, _ in p.targets)]


def _attached(c: _Cluster, key: GatewayKey, listener: str) -> list[str]:
    ns, name = key
    return sorted(route for (rns, route), parents in c.routes.items() if rns == ns
                  and any(g == name and s in (None, listener) for g, s in parents))


def unauthenticated_listeners(resources: list[ResourceView], ctx: Context) -> Iterator[tuple[str, str, str]]:
    for cluster, c in _clusters(resources).items():
        for key, gateway in sorted(c.gateways.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
            if _verifies_clients(c, key, None):
                continue
            for listener in _listeners(gateway):
                if _verifies_clients(c, key, listener) or _gateway_auth(c, key, listener):
                    continue
                open_routes = [r for r in _attached(c, key, listener) if not _route_auth(c, key[0], r)]
                if open_routes:
                    shown = ", ".join(open_routes[:5]) + (f" and {len(open_routes) - 5} more" if len(open_routes) > 5 else "")
                    yield (gateway.display, f"listener {listener} admits unauthenticated requests to {shown}: no "
                                            "SecurityPolicy that authenticates (apiKeyAuth, jwt, ...) targets the Gateway, "
                                            "the listener or these routes", cluster or "")


def limits_on_claimed_headers(resources: list[ResourceView], ctx: Context) -> Iterator[tuple[str, str, str]]:
    for cluster, c in _clusters(resources).items():
        for btp in c.limits:
            ns, spec = _ns(btp), _spec(btp)
            selected = _header_selectors(spec)
            # (gateway, listener or None, policies writing identity headers there) for every place the policy applies
            places: list[tuple[GatewayKey, str | None, list[_Policy]]] = []
            for kind, name, section in _targets(spec):
                if kind == "Gateway" and (ns, name) in c.gateways:
                    for gw_listener in _listeners(c.gateways[(ns, name)]) if section is None else [str(section)]:
                        places.append(((ns, name), gw_listener, _gateway_auth(c, (ns, name), gw_listener)))
                elif kind in ("HTTPRoute", "GRPCRoute"):
                    for gw_name, parent_listener in c.routes.get((ns, name), []):
                        gateway_policies = [p for lst in ([parent_listener] if parent_listener else
                                                          _listeners(c.gateways[(ns, gw_name)]) if (ns, gw_name) in c.gateways
                                                          else []) for p in _gateway_auth(c, (ns, gw_name), lst)]
                        places.append(((ns, gw_name), parent_listener, _route_auth(c, ns, name) + gateway_policies))
            for key, listener, covering in places:
                if key not in c.gateways or _verifies_clients(c, key, listener):
                    continue
                written: set[str] = set().union(*(p.identity_headers for p in covering))
                for header in sorted(selected - written):
                    where = f"Gateway {key[0] + '/' if key[0] else ''}{key[1]}" + (f" listener {listener}" if listener else "")
                    yield (btp.display, f"rate-limit rules select clients by header {header} on {where}, which no "
                                        "authenticating SecurityPolicy there sets from the identity: the client's own "
                                        "claim decides whose limit a request counts against", cluster or "")


RULES = [
    Rule("entry-authenticated", "Every listener of a Gateway that does not verify client certificates is covered by a "
         "SecurityPolicy that authenticates the caller (on the Gateway, the listener or each of its routes).",
         Severity.high, Enforcement.mandatory,
         "target the Gateway with a SecurityPolicy with apiKeyAuth or jwt (workloads/render/edge_auth.py), or verify "
         "client certificates on it (ClientTrafficPolicy tls.clientValidation)",
         stack_check=unauthenticated_listeners, group="kubernetes"),
    Rule("limits-keyed-by-identity", "Rate limits that select clients by a header use a header the authenticating "
         "SecurityPolicy sets from the identity (apiKeyAuth forwardClientIDHeader, jwt claimToHeaders).",
         Severity.high, Enforcement.mandatory,
         "select on the header the SecurityPolicy forwards the identity in (x-hybridml-tenant), or set "
         "forwardClientIDHeader / claimToHeaders to the header the limits use",
         stack_check=limits_on_claimed_headers, group="kubernetes"),
]
