"""TLS certificates of the data paths, from the fleet's one issuer. Pure: returns manifests.

Every data endpoint another site may read (the Redis online store and its Sentinels, Qdrant, the Feast feature
server) serves TLS with a cert-manager `Certificate` issued by `FLEET_ISSUER`, the ClusterIssuer whose CA also signs
the gateways' fleet certificates (`fleet-tls`, `fleet-client-tls`, trusted through the `fleet-ca` ConfigMap,
workloads/render/gateway.py): one CA for every site-to-site connection. Each Certificate's Secret carries
`tls.crt`, `tls.key` and `ca.crt`; the servers mount it, and each client mounts `ca.crt` of a Secret of its own
namespace (a data client's own Certificate from the same issuer, or the server's Secret when it runs beside it).

Installing cert-manager and creating the ClusterIssuer is the convergence issue's (19): until then the Certificates
are admitted (their CRD is installed on the local control planes, hybridml/local/sites.py) but nothing issues them.
"""
from __future__ import annotations

from workloads.render import meta

FLEET_ISSUER = "hybridml-fleet-ca"
"""The one cert-manager ClusterIssuer of the fleet (WorkloadOptions.fleet_issuer overrides it per stack)."""
ISSUER_KIND = "ClusterIssuer"
API_VERSION = "cert-manager.io/v1"
TLS_CRT, TLS_KEY, CA_CRT = "tls.crt", "tls.key", "ca.crt"
DURATION, RENEW_BEFORE = "2160h", "720h"
"""90 days, renewed 30 days before expiry (cert-manager rotates the key with `rotationPolicy: Always`)."""
CLIENT_TLS_MOUNT = "/var/run/secrets/hybridml/data-tls"
"""Where a data client finds its Certificate's Secret (`ca.crt` to verify the data stores; `tls.crt`/`tls.key`)."""


def issuer_ref(issuer: str = FLEET_ISSUER) -> dict:
    return {"name": issuer, "kind": ISSUER_KIND, "group": "cert-manager.io"}


def certificate(name: str, namespace: str, labels: dict, *, secret_name: str, dns_names: list[str] | None = None,
                common_name: str | None = None, issuer: str = FLEET_ISSUER, server: bool = True) -> dict:
    """A Certificate of `issuer` whose Secret `secret_name` holds tls.crt, tls.key and ca.crt. A server certificate
    also has client usage: Redis replicas and Sentinels present the same certificate when they connect out."""
    spec: dict = {"secretName": secret_name, "issuerRef": issuer_ref(issuer), "duration": DURATION,
                  "renewBefore": RENEW_BEFORE,
                  "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                  "usages": ["digital signature", "key encipherment", "server auth", "client auth"] if server
                  else ["digital signature", "key encipherment", "client auth"],
                  "secretTemplate": {"labels": dict(labels)}}
    if dns_names:
        spec["dnsNames"] = sorted(set(dns_names))
    if common_name:
        spec["commonName"] = common_name
    return {"apiVersion": API_VERSION, "kind": "Certificate", "metadata": meta.metadata(name, namespace, labels), "spec": spec}


def tls_secret_name(name: str) -> str:
    """The Secret of the Certificate of a data service called `name`."""
    return meta.k8s_name(name, "tls")


def client_certificate(pipeline: str, namespace: str, site: str, labels: dict, issuer: str = FLEET_ISSUER) -> dict:
    """A data client's own certificate (a pipeline reading feature views or collections): its Secret brings the
    fleet CA (`ca.crt`) into the client's namespace, and the client certificate for stores that ask for one."""
    name = meta.k8s_name(pipeline, "data-client")
    return certificate(name, namespace, labels, secret_name=tls_secret_name(name), common_name=f"{pipeline}.{namespace}.{site}",
                       issuer=issuer, server=False)


def client_tls_volume(pipeline: str) -> tuple[dict, dict]:
    """(volume, mount) of a data client's certificate Secret."""
    secret = tls_secret_name(meta.k8s_name(pipeline, "data-client"))
    return ({"name": "data-tls", "secret": {"secretName": secret, "defaultMode": 0o440}},
            {"name": "data-tls", "mountPath": CLIENT_TLS_MOUNT, "readOnly": True})
