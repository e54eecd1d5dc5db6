"""A per-cluster CA and the certificates a local control plane needs, made with the openssl CLI.

Everything is ECDSA P-256 (fast to generate) except the service-account signing key (RSA 2048,
the most widely supported). Files are created once and reused: ``ensure_pki`` is idempotent.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import LocalClusterError

DAYS = "3650"


@dataclass(frozen=True)
class ClientCert:
    name: str  # file stem
    common_name: str
    organization: str | None = None


# Identities of the components. They are members of system:masters: this is a throwaway local
# control plane, and it spares per-controller service-account credentials.
CLIENTS = (
    ClientCert("admin", "hybridml-admin", "system:masters"),
    ClientCert("controller-manager", "system:kube-controller-manager", "system:masters"),
    ClientCert("scheduler", "system:kube-scheduler", "system:masters"),
    ClientCert("kwok", "kwok-controller", "system:masters"),
    ClientCert("kuberay-operator", "kuberay-operator", "system:masters"),
    ClientCert("kserve-controller", "kserve-controller-manager", "system:masters"),
    # the API server's identity towards kubelets (logs, exec), as kubeadm's apiserver-kubelet-client
    ClientCert("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
)


def _openssl(*args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(
        ["openssl", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if proc.returncode != 0:
        raise LocalClusterError(f"openssl {' '.join(args)} failed:\n{proc.stdout}")


def _ec_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    os.chmod(path, 0o600)


def _subject(cn: str, org: str | None) -> str:
    return (f"/O={org}" if org else "") + f"/CN={cn}"


def _sign(pki: Path, stem: str, cn: str, org: str | None, extensions: list[str]) -> None:
    key, crt = pki / f"{stem}.key", pki / f"{stem}.crt"
    _ec_key(key)
    with tempfile.TemporaryDirectory() as tmp:
        csr = Path(tmp) / "req.csr"
        ext = Path(tmp) / "ext.cnf"
        ext.write_text("\n".join(extensions) + "\n")
        _openssl("req", "-new", "-key", str(key), "-subj", _subject(cn, org), "-out", str(csr))
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
            "-set_serial", str(secrets.randbits(63)), "-days", DAYS, "-sha256",
            "-extfile", str(ext), "-out", str(crt),
        )


def ensure_serving_cert(pki: Path, stem: str, common_name: str, sans: str) -> tuple[Path, Path]:
    """(certificate, key) of a server on this machine, signed by the cluster's CA once (``sans``: an openssl
    subjectAltName value, e.g. ``IP:127.0.0.1``): the API server trusts it through that CA (a webhook's caBundle)."""
    crt, key = pki / f"{stem}.crt", pki / f"{stem}.key"
    if not crt.exists():
        _sign(pki, stem, common_name, None, [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            f"subjectAltName={sans}",
        ])
    return crt, key


def ensure_pki(pki: Path, cluster_name: str) -> Path:
    """Create (once) the CA, serving/client certificates and service-account keys in ``pki``."""
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    if not (pki / "ca.crt").exists():
        _ec_key(pki / "ca.key")
        _openssl(
            "req", "-x509", "-new", "-key", str(pki / "ca.key"), "-sha256", "-days", DAYS,
            "-subj", f"/CN=hybridml-local-ca-{cluster_name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            "-out", str(pki / "ca.crt"),
        )
    if not (pki / "apiserver.crt").exists():
        sans = ",".join([
            "IP:127.0.0.1", "IP:10.0.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
        ])
        _sign(pki, "apiserver", "kube-apiserver", None, [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            f"subjectAltName={sans}",
        ])
    for c in CLIENTS:
        if not (pki / f"{c.name}.crt").exists():
            _sign(pki, c.name, c.common_name, c.organization, [
                "basicConstraints=critical,CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=clientAuth",
            ])
    if not (pki / "sa.key").exists():
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(pki / "sa.key"))
        os.chmod(pki / "sa.key", 0o600)
        _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    return pki
