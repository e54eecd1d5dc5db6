"""Names and client endpoints of the data services (Redis/Feast feature views, Qdrant collections)."""
from __future__ import annotations

from infra.labels import namespace_for
from workloads.planning import DataRead
from workloads.render import meta
from workloads.render.certificates import CLIENT_TLS_MOUNT
from workloads.render.context import fleet_service_host, service_fqdn

REDIS_PORT = 6379
SENTINEL_PORT = 26379
QDRANT_HTTP = 6333
QDRANT_GRPC = 6334
QDRANT_P2P = 6335
FEAST_PORT = 443
"""The feature server's Service port: the Feast operator serves https on 443 (container port 6567) when
`server.tls` is set, as it is for every view (workloads/render/feature_store.py)."""
FEAST_SERVER_PORT = 6567


def redis_name(view: str) -> str:
    return meta.k8s_name("redis", view, limit=50)


def feast_name(view: str) -> str:
    return meta.k8s_name(view, limit=40)


def redis_peers(view: str) -> str:
    """Headless Service of a view's Redis data pods (their stable DNS names for replication and Sentinel)."""
    return f"{redis_name(view)}-peers"


def redis_arbiter(view: str) -> str:
    """The third Sentinel of a view (a pod of its own, with a Service of its name)."""
    return meta.k8s_name(redis_name(view), "arbiter")


def sentinel_hosts(view: str, namespace: str) -> list[str]:
    """The three Sentinels of a view, as clients and the Sentinels themselves reach them."""
    peers = service_fqdn(redis_peers(view), namespace)
    return [f"{redis_name(view)}-0.{peers}", f"{redis_name(view)}-1.{peers}", service_fqdn(redis_arbiter(view), namespace)]


def feast_online_service(view: str) -> str:
    """Service the Feast operator creates for the online feature server of FeatureStore `view`."""
    return f"feast-{feast_name(view)}-online"


def qdrant_name(collection: str) -> str:
    return meta.k8s_name("qdrant", collection, limit=50)


def fleet_name(name: str) -> str:
    """Internal load-balancer Service through which other sites reach a data service."""
    return meta.k8s_name(name, "fleet")


def env_key(kind: str, name: str) -> str:
    return ("FEATURES_" if kind == "feature_view" else "COLLECTION_") + name.upper().replace("-", "_")


def client_env(reads: list[DataRead], site: str, domain: str) -> list[dict]:
    """Environment variables telling a pipeline where its data is (same site: cluster DNS; another site:
    the data site's internal load balancer under `<site>.fleet.<domain>`). Credentials come as files; every data
    service speaks TLS only: `HYBRIDML_DATA_TLS_DIR` holds the pipeline's own certificate (tls.crt, tls.key) and
    the fleet CA (ca.crt) that verifies the stores (workloads/render/certificates.py)."""
    out = [{"name": "HYBRIDML_DATA_TLS_DIR", "value": CLIENT_TLS_MOUNT}] if reads else []
    for r in reads:
        ns = namespace_for(r.tier)
        key = "HYBRIDML_" + env_key(r.kind, r.name)
        if r.kind == "feature_view":
            local = r.data_site == site
            redis = (service_fqdn(redis_name(r.name), ns) if local
                     else fleet_service_host(fleet_name(redis_name(r.name)), ns, r.data_site, domain))
            # Reads: any data pod (primary or replica). Writers on the site find the primary through Sentinel.
            out.append({"name": f"{key}_REDIS", "value": f"{redis}:{REDIS_PORT}"})
            out.append({"name": f"{key}_REDIS_TLS", "value": "true"})
            if local:
                out.append({"name": f"{key}_REDIS_SENTINELS",
                            "value": ",".join(f"{h}:{SENTINEL_PORT}" for h in sentinel_hosts(r.name, ns))})
                out.append({"name": f"{key}_REDIS_SENTINEL_MASTER", "value": redis_name(r.name)})
                out.append({"name": f"{key}_FEAST_URL",
                            "value": f"https://{service_fqdn(feast_online_service(r.name), ns)}:{FEAST_PORT}"})
        else:
            host = (service_fqdn(qdrant_name(r.name), ns) if r.data_site == site
                    else fleet_service_host(fleet_name(qdrant_name(r.name)), ns, r.data_site, domain))
            out.append({"name": f"{key}_URL", "value": f"https://{host}:{QDRANT_HTTP}"})
        out.append({"name": f"{key}_SITE", "value": r.data_site})
    return out


def credential_purpose(kind: str, name: str, data_site: str) -> str:
    """The workloads.secrets purpose of a data service's password/API key (one per data site)."""
    return f"{'redis' if kind == 'feature_view' else 'qdrant'}/{data_site}/{name}"
