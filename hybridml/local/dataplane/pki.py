"""Throwaway certificates for the local data path, made with the `cryptography` package (no openssl CLI).

In the fleet cert-manager issues the gateways' TLS material (`public-tls`, `fleet-tls`, `fleet-client-tls`; the
`fleet-ca` ConfigMap carries the fleet CA). On the local data path nothing issues them, so `up` mints a throwaway
CA per run and signs what the rendered listeners and Backends reference: a public certificate per entry site (its
listeners' hostnames), a fleet server certificate per site (`<site>.fleet.<domain>`, the SNI the other sites'
Backends send) and a fleet client certificate per site. ECDSA P-256, valid for 7 days; the keys live only in the
state dir (0600).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=7)
PEM = serialization.Encoding.PEM


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


@dataclass(frozen=True)
class KeyPair:
    cert_pem: str
    key_pem: str


@dataclass
class ThrowawayCA:
    """A CA that lives as long as one `up`: it signs server and client certificates for the gateways."""

    name: str
    key: ec.EllipticCurvePrivateKey = field(default_factory=_key)

    def __post_init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False, encipher_only=False,
                                                  decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(PEM).decode()

    def issue(self, common_name: str, dns_names: list[str], *, server: bool = True) -> KeyPair:
        """A certificate for `dns_names` (server and client usage), or a client-only one (`server=False`)."""
        key = _key()
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH] if server else [])
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if dns_names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]),
                                            critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return KeyPair(cert.public_bytes(PEM).decode(), _key_pem(key))
