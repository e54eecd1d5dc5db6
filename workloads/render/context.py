"""What every builder needs to know about the site it renders for."""
from __future__ import annotations

from dataclasses import dataclass

from infra.labels import GATEWAY_NAMESPACE, MONITORING_NAMESPACE
from infra.objectstore import ObjectStore
from workloads.images import Images
from workloads.render.certificates import FLEET_ISSUER


@dataclass(frozen=True)
class SiteContext:
    env_name: str
    site: str
    site_kind: str                      # cloud | datacenter
    domain: str
    images: Images = Images()
    prometheus_url: str = f"http://prometheus-operated.{MONITORING_NAMESPACE}.svc.cluster.local:9090"
    gateway_namespace: str = GATEWAY_NAMESPACE
    monitoring_namespace: str = MONITORING_NAMESPACE
    storage_class: str | None = None
    privacy_zones: tuple[str, ...] = ()
    """Datacenter: the privacy zones of its racks (each tier's pods keep to their home zone); cloud: ()."""
    flink_state_uri: str = "s3://hybridml-flink-state"
    """Base URI for the Flink state (checkpoints, savepoints, HA) of public/internal streaming views. The state of
    pii/restricted views never goes there: see `object_store` and workloads/render/flink.py."""
    object_store: ObjectStore | None = None
    """Datacenter: its own object store (spec `object_store`), where the Flink state of pii/restricted views goes;
    without one, that state goes to a PersistentVolumeClaim. Cloud: None."""
    cert_issuer: str = FLEET_ISSUER
    """The cert-manager ClusterIssuer of every data-path certificate (the fleet's one issuer)."""

    @property
    def fleet_host(self) -> str:
        """This site's gateway for other sites (mTLS, internal load balancer)."""
        return fleet_host(self.site, self.domain)


def fleet_host(site: str, domain: str) -> str:
    return f"{site}.fleet.{domain}"


def region_host(region: str, domain: str, entry_class: str = "standard") -> str:
    """Entry hostname of a user region: `<region>.<domain>`, `<region>.<tier>.<domain>` for pii/restricted."""
    return f"{region}.{domain}" if entry_class == "standard" else f"{region}.{entry_class}.{domain}"


def service_fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def fleet_service_host(name: str, namespace: str, site: str, domain: str) -> str:
    """DNS name of a data service that another site reads through an internal load balancer."""
    return f"{name}.{namespace}.{fleet_host(site, domain)}"
