"""The fleet CA: one per environment, the same on every site and every run, and able to sign what it must."""
from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.workloads.schemas import validate
from workloads.render import fleet_ca


def test_the_ca_is_a_pure_function_of_seed_and_environment():
    a, b = fleet_ca.fleet_ca("seed-1", "prod"), fleet_ca.fleet_ca("seed-1", "prod")
    assert a == b                                    # byte-identical PEM: no diff on a second `pulumi up`
    assert fleet_ca.fleet_ca("seed-2", "prod").cert_pem != a.cert_pem
    assert fleet_ca.fleet_ca("seed-1", "dev").key_pem != a.key_pem   # environments never share a CA


def test_the_ca_certificate_is_a_ca_valid_for_years_and_signs_leaves_that_verify():
    ca = fleet_ca.fleet_ca("seed", "dev")
    cert = ca.certificate
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= dt.timedelta(days=3000)
    cert.verify_directly_issued_by(cert)             # self-signed, signature valid

    from cryptography.hazmat.primitives import serialization
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), None)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis")]))
            .issuer_name(cert.subject).public_key(leaf_key.public_key()).serial_number(7)
            .not_valid_before(dt.datetime.now(dt.UTC)).not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))           # type: ignore[arg-type]
    leaf.verify_directly_issued_by(cert)
    other = fleet_ca.fleet_ca("other-seed", "dev").certificate
    try:
        leaf.verify_directly_issued_by(other)
    except Exception:  # noqa: BLE001 - any failure is the expected outcome
        pass
    else:
        raise AssertionError("a leaf of one CA verified against another")


def test_issuer_secret_configmap_and_gateway_certificates_are_schema_valid_and_consistent():
    ca = fleet_ca.fleet_ca("seed", "dev")
    lbls = {"app.kubernetes.io/name": "pki"}
    issuer = fleet_ca.cluster_issuer(lbls)
    secret = fleet_ca.ca_secret(ca, lbls)
    certs = fleet_ca.gateway_certificates("aws-use1.fleet.dev.example", ["us-east.dev.example", "eu.dev.example"],
                                          "hybridml-gateway", lbls, public_tls="public-tls", fleet_tls="fleet-tls",
                                          fleet_client_tls="fleet-client-tls")
    for m in [issuer, secret, fleet_ca.ca_configmap("fleet-ca", "hybridml-gateway", ca.cert_pem, lbls), *certs]:
        assert validate(m) == [], m["kind"]
    assert issuer["spec"]["ca"]["secretName"] == secret["metadata"]["name"]
    assert secret["metadata"]["namespace"] == fleet_ca.CERT_MANAGER_NAMESPACE
    by_secret = {c["spec"]["secretName"]: c for c in certs}
    assert set(by_secret) == {"public-tls", "fleet-tls", "fleet-client-tls"}
    assert by_secret["fleet-tls"]["spec"]["issuerRef"]["name"] == fleet_ca.FLEET_ISSUER
    assert by_secret["fleet-tls"]["spec"]["dnsNames"] == ["aws-use1.fleet.dev.example"]
    assert "server auth" not in by_secret["fleet-client-tls"]["spec"]["usages"]
    # Users' clients verify the public listeners: never the private fleet CA.
    assert by_secret["public-tls"]["spec"]["issuerRef"]["name"] == fleet_ca.PUBLIC_ISSUER != fleet_ca.FLEET_ISSUER
    assert by_secret["public-tls"]["spec"]["dnsNames"] == ["eu.dev.example", "us-east.dev.example"]


def test_a_site_without_public_listeners_gets_no_public_certificate():
    certs = fleet_ca.gateway_certificates("dc.fleet.x", [], "gw", {}, public_tls="p", fleet_tls="f", fleet_client_tls="c")
    assert sorted(c["spec"]["secretName"] for c in certs) == ["c", "f"]
