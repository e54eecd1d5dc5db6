"""The fleet CA and the objects that make every site's certificates issuable. Pure: returns PEM and manifests.

One CA signs every site-to-site certificate (gateway fleet listeners and clients, Redis, Qdrant, the Feast
feature server), so a client at one site verifies a server at any other. Every site's cluster must hold the
same CA, yet the sites are separate clusters (and separate stacks in a sharded rollout) with no shared store:
the CA is *derived* from the stack's secret seed (workloads/secrets.py), the way every other credential is.
Its key is an ECDSA P-256 scalar from HMAC(seed, "fleet-ca/<environment>"), and the certificate is signed with
deterministic ECDSA (RFC 6979) over fixed fields, so each site — and each run — renders byte-identical PEM:
no diff on a second `pulumi up`, the same CA in every cluster. Rotating the seed rotates the CA.

cert-manager turns it into certificates: the CA's key pair is a Secret in cert-manager's own namespace, read by
the ClusterIssuer `FLEET_ISSUER` (kind CA); the CA certificate alone (no key) is the `fleet-ca` ConfigMap the
gateways verify peers with.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infra.versions import OPERATORS
from workloads.render import meta
from workloads.render.certificates import API_VERSION, CA_CRT, FLEET_ISSUER, TLS_CRT, TLS_KEY

CERT_MANAGER_NAMESPACE = OPERATORS["cert-manager"].namespace or "cert-manager"
"""cert-manager's own namespace, its cluster resource namespace: a ClusterIssuer of kind CA reads its Secret there."""
CA_SECRET = FLEET_ISSUER
NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
VALIDITY = dt.timedelta(days=3650)
# The order of the P-256 group: a private scalar must lie in [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class FleetCa:
    cert_pem: str
    key_pem: str

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())


def _scalar(seed: str, environment: str) -> int:
    counter = 0
    while True:   # one try in 2^32 falls outside [1, n-1]; loop instead of biasing
        digest = hmac.new(seed.encode(), f"fleet-ca/{environment}/{counter}".encode(), hashlib.sha256).digest()
        value = int.from_bytes(digest, "big")
        if 1 <= value < _P256_ORDER:
            return value
        counter += 1


def fleet_ca(seed: str, environment: str) -> FleetCa:
    """The environment's fleet CA, a pure function of (seed, environment)."""
    key = ec.derive_private_key(_scalar(seed, environment), ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hybridml"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"hybridml fleet CA ({environment})")])
    serial = int.from_bytes(hashlib.sha256(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()[:16], "big") >> 1
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(NOT_BEFORE).not_valid_after(NOT_BEFORE + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256(), ecdsa_deterministic=True))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return FleetCa(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode())


def ca_secret(ca: FleetCa, labels: dict) -> dict:
    """The CA key pair for the ClusterIssuer (cert-manager reads tls.crt/tls.key of a CA issuer's Secret)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": meta.metadata(CA_SECRET, CERT_MANAGER_NAMESPACE, labels),
            "stringData": {TLS_CRT: ca.cert_pem, TLS_KEY: ca.key_pem}}


def cluster_issuer(labels: dict) -> dict:
    return {"apiVersion": API_VERSION, "kind": "ClusterIssuer", "metadata": {"name": FLEET_ISSUER, "labels": dict(labels)},
            "spec": {"ca": {"secretName": CA_SECRET}}}


def ca_configmap(name: str, namespace: str, ca_pem: str, labels: dict) -> dict:
    """The CA certificate, public: what gateways (BackendTLSPolicy) verify fleet peers against."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta.metadata(name, namespace, labels), "data": {CA_CRT: ca_pem}}


PUBLIC_ISSUER = "hybridml-public"
"""The ClusterIssuer of the public listeners' certificate (`<region>.<domain>`): one the users' clients trust (an
ACME issuer with a DNS-01 solver for the zone, or the organisation's own). A prerequisite (README "Prerequisites"):
the fleet CA is private to the fleet and must not sign what users' clients verify."""


def gateway_certificates(fleet_host: str, public_hosts: list[str], namespace: str, labels: dict, *, public_tls: str,
                         fleet_tls: str, fleet_client_tls: str) -> list[dict]:
    """A site gateway's certificates: fleet server (`<site>.fleet.<zone>`) and fleet client (mTLS to the other sites)
    from the fleet CA; public (the user-region hostnames entering here) from `PUBLIC_ISSUER`."""
    from workloads.render.certificates import certificate

    out = [certificate(fleet_tls, namespace, labels, secret_name=fleet_tls, dns_names=[fleet_host], common_name=fleet_host),
           certificate(fleet_client_tls, namespace, labels, secret_name=fleet_client_tls, common_name=f"gateway.{fleet_host}",
                       server=False)]
    if public_hosts:
        hosts = sorted(set(public_hosts))
        out.append(certificate(public_tls, namespace, labels, secret_name=public_tls, dns_names=hosts, common_name=hosts[0],
                               issuer=PUBLIC_ISSUER))
    return out
