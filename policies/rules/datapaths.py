"""Data paths: what a pii/restricted data piece leaves behind and who may reach a data store (issue 18).

- `flink-state-in-site`: the checkpoints, savepoints and HA metadata of a pii/restricted streaming view stay in its
  datacenter: on a PersistentVolumeClaim mounted in the job's pods (`file://`), or in the object store the
  datacenter declares in the spec (its bucket, at its endpoint). Any other URI (a cloud bucket) is a violation.
- `data-path-tls`: every data store serves TLS only, with a certificate of the fleet's one issuer: Redis and its
  Sentinels (`--port 0 --tls-port`), Qdrant (`QDRANT__SERVICE__ENABLE_TLS`, P2P TLS), the Feast feature server
  (`server.tls`); and the certificate of a store exposed to other sites names the host they reach it by.
- `data-path-narrow`: a store's fleet load balancer and the NetworkPolicy that admits its remote readers name only
  the networks of the sites the plan says read it (infra.bounds.site_networks): nothing wider, no other site's.

Pure: the rendered objects, the spec and the plan (`Context.env`, `Context.plan`).
"""
from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from infra import labels as L
from infra.bounds import site_networks
from infra.spec import Datacenter, Environment
from policies.rules.base import Context, Enforcement, ResourceView, Rule, Severity
from policies.rules.podspec import containers, pod_specs
from workloads import planning
from workloads.render.certificates import FLEET_ISSUER, ISSUER_KIND
from workloads.render.data import QDRANT_GRPC, QDRANT_HTTP, QDRANT_P2P, REDIS_PORT, SENTINEL_PORT
from workloads.render.flink import S3_ENDPOINT_KEY, STATE_DIR_KEYS
from workloads.render.meta import COLLECTION, FEATURE_VIEW
from workloads.render.network import DATA_COMPONENTS

SENSITIVE = ("pii", "restricted")
LEGACY_STATE_KEYS = ("state.checkpoints.dir", "state.savepoints.dir")
REDIS_PORTS = {REDIS_PORT, SENTINEL_PORT}
QDRANT_PORTS = {QDRANT_HTTP, QDRANT_GRPC, QDRANT_P2P}
COMPONENT = "app.kubernetes.io/component"
INSTANCE = "app.kubernetes.io/instance"
HOSTNAME_ANNOTATION = "external-dns.alpha.kubernetes.io/hostname"
Net = ipaddress.IPv4Network | ipaddress.IPv6Network



def _container_ports(c: dict[str, Any]) -> set[int]:
    """A container's ports as ints: at `pulumi preview` CrossGuard hands numbers over as floats (6379.0)."""
    return {int(p["containerPort"]) for p in c.get("ports") or [] if isinstance(p.get("containerPort"), int | float)}

def _tier(r: ResourceView) -> str | None:
    tier: str | None = r.labels.get(L.PRIVACY_TIER)
    if tier:
        return tier
    ns = r.metadata.get("namespace") or ""
    return ns.removeprefix("ml-") if ns.startswith("ml-") else None


# --------------------------------------------------------------------------- flink-state-in-site


def _pvc_mounts(r: ResourceView) -> set[str]:
    """Mount paths, in any pod template of the job, of volumes backed by a PersistentVolumeClaim."""
    out: set[str] = set()
    for _, _, spec in pod_specs(r.kind, r.props):
        claims = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict) and v.get("persistentVolumeClaim")}
        for _, c in containers(spec):
            out |= {m.get("mountPath", "") for m in c.get("volumeMounts") or [] if m.get("name") in claims}
    return {m.rstrip("/") for m in out if m}


def flink_state_in_site(r: ResourceView, ctx: Context) -> Iterable[str]:
    if not r.is_kubernetes or r.kind != "FlinkDeployment" or _tier(r) not in SENSITIVE:
        return
    conf: dict[str, Any] = (r.props.get("spec") or {}).get("flinkConfiguration") or {}
    site = ctx.env.site(r.cluster) if ctx.env is not None and r.cluster in {s.name for s in ctx.env.sites} else None
    store = site.object_store if isinstance(site, Datacenter) else None
    mounts = _pvc_mounts(r)
    for key in STATE_DIR_KEYS + tuple(k for k in LEGACY_STATE_KEYS if k in conf):
        uri = conf.get(key)
        if not uri:
            yield f"{key} is not set: the {_tier(r)} view's state would go wherever the image's default points"
            continue
        parts = urlsplit(str(uri))
        if parts.scheme == "file":
            path = parts.path.rstrip("/")
            if not any(path == m or path.startswith(m + "/") for m in mounts):
                yield f"{key} {uri} is not on a PersistentVolumeClaim mounted in the job's pods (mounted: {sorted(mounts) or 'none'})"
        elif (parts.scheme in ("s3", "s3a", "s3p") and store is not None and parts.netloc == store.bucket
              and str(conf.get(S3_ENDPOINT_KEY, "")).rstrip("/") == store.endpoint):
            continue
        else:
            own = (f"its object store s3://{store.bucket} at {store.endpoint}" if store is not None
                   else "no object store of its own in the spec")
            yield (f"{key} {uri} leaves site {r.cluster} ({own}): the state of a {_tier(r)} view stays in its datacenter"
                   + (f" ({S3_ENDPOINT_KEY} is {conf.get(S3_ENDPOINT_KEY)!r})" if parts.scheme.startswith("s3") and store else ""))


# --------------------------------------------------------------------------- data-path-tls


def _is_data(r: ResourceView) -> bool:
    return r.labels.get(COMPONENT) in DATA_COMPONENTS


def _fleet_certs(resources: list[ResourceView]) -> dict[tuple[str | None, str | None, str], ResourceView]:
    """(cluster, namespace, secretName) -> the Certificate of the fleet issuer that fills that Secret."""
    out = {}
    for r in resources:
        spec = r.props.get("spec") or {}
        issuer = spec.get("issuerRef") or {}
        if r.kind == "Certificate" and issuer.get("name") == FLEET_ISSUER and issuer.get("kind") == ISSUER_KIND:
            out[(r.cluster, r.metadata.get("namespace"), str(spec.get("secretName")))] = r
    return out


def _argv(c: dict[str, Any]) -> list[str]:
    words: list[str] = []
    for part in [*(c.get("command") or []), *(c.get("args") or [])]:
        try:
            words += shlex.split(str(part))
        except ValueError:
            words += str(part).split()
    return words


def _option(words: list[str], name: str) -> str | None:
    return next((words[i + 1] for i, w in enumerate(words[:-1]) if w == name), None)


def _plaintext(c: dict[str, Any]) -> list[str]:
    """What a data-store container serves without TLS (empty: it serves TLS only)."""
    ports = _container_ports(c)
    problems = []
    words = _argv(c)
    for port in sorted(p for p in ports if p in REDIS_PORTS):
        if _option(words, "--port") != "0" or _option(words, "--tls-port") != str(port):
            problems.append(f"Redis port {port} without `--port 0 --tls-port {port}`")
    env = {e.get("name"): e.get("value") for e in c.get("env") or [] if isinstance(e, dict)}
    if ports & {QDRANT_HTTP, QDRANT_GRPC} and (env.get("QDRANT__SERVICE__ENABLE_TLS") != "true" or not env.get("QDRANT__TLS__CERT")):
        problems.append("Qdrant REST/gRPC without QDRANT__SERVICE__ENABLE_TLS=true and a certificate")
    if QDRANT_P2P in ports and env.get("QDRANT__CLUSTER__P2P__ENABLE_TLS") != "true":
        problems.append("Qdrant P2P without QDRANT__CLUSTER__P2P__ENABLE_TLS=true")
    return problems


def _mounted_secrets(spec: dict[str, Any], c: dict[str, Any]) -> set[str]:
    secrets: dict[str, str] = {str(v.get("name")): str((v.get("secret") or {}).get("secretName")) for v in spec.get("volumes") or []
                               if isinstance(v, dict) and v.get("secret")}
    return {secrets[str(m.get("name"))] for m in c.get("volumeMounts") or [] if str(m.get("name")) in secrets}


def data_path_tls(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    certs = _fleet_certs(resources)
    served: dict[tuple[str | None, str | None], list[tuple[dict[str, Any], set[str]]]] = {}   # pod labels, cert Secrets
    for r in resources:
        if not r.is_kubernetes or not _is_data(r):
            continue
        ns = r.metadata.get("namespace")
        if r.kind == "FeatureStore":
            server = ((((r.props.get("spec") or {}).get("services") or {}).get("onlineStore") or {}).get("server") or {})
            tls = server.get("tls") or {}
            secret = (tls.get("secretRef") or {}).get("name")
            if tls.get("disable") or not secret:
                yield r.display, "the Feast feature server serves plain HTTP (no services.onlineStore.server.tls)"
            elif (r.cluster, ns, secret) not in certs:
                yield r.display, f"server.tls Secret {secret!r} is no Certificate of the fleet issuer {FLEET_ISSUER!r}"
            continue
        for where, meta, spec in pod_specs(r.kind, r.props):
            for cwhere, c in containers(spec, include_init=False):
                ports = _container_ports(c)
                if not ports & (REDIS_PORTS | QDRANT_PORTS):
                    continue
                plaintext = _plaintext(c)
                for problem in plaintext:
                    yield r.display, f"{where}.{cwhere} serves {problem}"
                mounted = {s for s in _mounted_secrets(spec, c) if (r.cluster, ns, s) in certs}
                if not mounted:
                    yield r.display, f"{where}.{cwhere} mounts no certificate of the fleet issuer {FLEET_ISSUER!r}"
                elif not plaintext:
                    served.setdefault((r.cluster, ns), []).append((meta.get("labels") or {}, mounted))
    for r in resources:
        spec = r.props.get("spec") or {}
        if not (r.kind == "Service" and _is_data(r) and spec.get("type") == "LoadBalancer"):
            continue
        host = (r.metadata.get("annotations") or {}).get(HOSTNAME_ANNOTATION)
        selector = spec.get("selector") or {}
        ns = r.metadata.get("namespace")
        backends = [secrets for labels, secrets in served.get((r.cluster, ns), [])
                    if selector and all(labels.get(k) == v for k, v in selector.items())]
        if not backends:
            yield r.display, "exposes a data store to other sites but selects no pod that serves TLS with a fleet certificate"
            continue
        names = {n for secrets in backends for s in secrets for n in (certs[(r.cluster, ns, s)].props["spec"].get("dnsNames") or [])}
        if host and host not in names:
            yield r.display, f"other sites reach it as {host}, which no certificate of its pods names"


# --------------------------------------------------------------------------- data-path-narrow


def _networks(env: Environment) -> dict[str, list[Net]]:
    return {s: [ipaddress.ip_network(n) for n in nets] for s, nets in site_networks(env).items()}


def _store(r: ResourceView) -> tuple[str, str] | None:
    if r.labels.get(FEATURE_VIEW):
        return "feature_view", str(r.labels[FEATURE_VIEW])
    if r.labels.get(COLLECTION):
        return "collection", str(r.labels[COLLECTION])
    return None


def _judge(ranges: list[str], data_site: str, readers: set[str], nets: dict[str, list[Net]]) -> Iterator[str]:
    allowed = [n for s in sorted(readers) for n in nets.get(s, [])]
    for text in ranges:
        try:
            net = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            yield f"{text!r} is not a CIDR"
            continue
        strangers = sorted(s for s, ns in nets.items() if s not in readers and s != data_site
                           and any(net.version == n.version and net.overlaps(n) for n in ns))
        if strangers:
            yield f"{text} admits {', '.join(strangers)}, which the plan does not have read it"
        elif not any(net.version == a.version and net.subnet_of(a) for a in allowed):   # type: ignore[arg-type]
            yield (f"{text} is wider than the networks of the sites that read it "
                   f"({', '.join(str(a) for a in allowed) or 'none: no other site reads it'})")


def data_path_narrow(resources: list[ResourceView], ctx: Context) -> Iterable[tuple[str, str]]:
    if ctx.plan is None or ctx.env is None:
        return
    nets = _networks(ctx.env)
    readers: dict[tuple[str, str, str], set[str]] = {}

    def remote(kind: str, name: str, site: str) -> set[str]:
        key = (kind, name, site)
        if key not in readers:
            readers[key] = {s for s in planning.data_readers(ctx.plan, kind, name, site) if s != site}
        return readers[key]

    # the data stores of each (cluster, namespace), by pod instance
    stores: dict[tuple[str | None, str | None], dict[str, tuple[str, str]]] = {}
    for r in resources:
        store = _store(r)
        if r.is_kubernetes and r.kind in ("StatefulSet", "Deployment") and _is_data(r) and store and r.labels.get(INSTANCE):
            stores.setdefault((r.cluster, r.metadata.get("namespace")), {})[str(r.labels[INSTANCE])] = store
    for r in resources:
        if not r.is_kubernetes or r.cluster is None:
            continue
        spec = r.props.get("spec") or {}
        if r.kind == "Service" and spec.get("type") == "LoadBalancer" and _is_data(r) and (store := _store(r)):
            ranges = spec.get("loadBalancerSourceRanges") or []
            if not ranges:
                yield r.display, "a data store's load balancer without loadBalancerSourceRanges admits any source"
            for problem in _judge(ranges, r.cluster, remote(*store, r.cluster), nets):
                yield r.display, f"loadBalancerSourceRanges: {problem}"
        elif r.kind == "NetworkPolicy":
            here = stores.get((r.cluster, r.metadata.get("namespace")), {})
            selected = _selected(spec.get("podSelector") or {}, here)
            if not selected:
                continue
            who = set().union(*(remote(kind, name, r.cluster) for kind, name in selected))
            for i, rule in enumerate(spec.get("ingress") or []):
                blocks = [p["ipBlock"].get("cidr") for p in rule.get("from") or [] if isinstance(p, dict) and p.get("ipBlock")]
                for problem in _judge(blocks, r.cluster, who, nets):
                    yield r.display, f"ingress[{i}] ipBlock {problem}"


def _selected(selector: dict[str, Any], stores: dict[str, tuple[str, str]]) -> list[tuple[str, str]]:
    """The data stores (of one namespace) whose pods a podSelector selects."""
    match = selector.get("matchLabels") or {}
    if INSTANCE in match:
        return [stores[match[INSTANCE]]] if match[INSTANCE] in stores else []
    components: set[str] | None = {str(match[COMPONENT])} if COMPONENT in match else None
    for e in selector.get("matchExpressions") or []:
        if e.get("key") == COMPONENT and e.get("operator") == "In":
            components = (components or set()) | {str(v) for v in e.get("values") or []}
    if components is not None and not components & set(DATA_COMPONENTS):
        return []
    return sorted(set(stores.values()))


RULES = [
    Rule("flink-state-in-site", "The Flink state (checkpoints, savepoints, HA) of a pii/restricted streaming view stays in "
         "its datacenter: a PersistentVolumeClaim or the datacenter's own object store, never a cloud bucket.",
         Severity.critical, Enforcement.mandatory,
         "write the state under file:// on a PVC mounted in the job, or to the datacenter's declared object_store "
         "(sites[].object_store; workloads/render/flink.py flink_state)", check=flink_state_in_site, group="placement"),
    Rule("data-path-tls", "Every data store (Redis and its Sentinels, Qdrant, the Feast feature server) serves TLS only, "
         "with a certificate of the fleet issuer that names the host other sites reach it by.", Severity.critical,
         Enforcement.mandatory, f"serve TLS with a cert-manager Certificate of ClusterIssuer {FLEET_ISSUER} "
         "(workloads/render/certificates.py; redis_sentinel.tls_args, qdrant.tls_env, FeatureStore server.tls)",
         stack_check=data_path_tls, group="placement"),
    Rule("data-path-narrow", "A data store's fleet load balancer and NetworkPolicies admit only the networks of the sites "
         "the plan says read it.", Severity.high, Enforcement.mandatory,
         "admit exactly the readers' site networks (workloads.planning.data_readers + infra.bounds.site_networks), "
         "as workloads/stack.py does", stack_check=data_path_narrow, group="placement"),
]
