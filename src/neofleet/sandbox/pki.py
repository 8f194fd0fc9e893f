"""The sandbox's PKI, made with openssl: a CA, the apiserver's serving certificate, client
certificates for the admin and the two controllers, and the service-account key pair."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from neofleet.sandbox.errors import ClusterError

SERVER_SANS = ("IP:127.0.0.1", "IP:10.0.0.1", "DNS:localhost", "DNS:kubernetes",
               "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
               "DNS:kubernetes.default.svc.cluster.local")
CLIENTS = {  # file stem -> subject
    "admin": "/O=system:masters/CN=neofleet-sandbox-admin",
    "controller-manager": "/CN=system:kube-controller-manager",
    "scheduler": "/CN=system:kube-scheduler",
}


@dataclass(frozen=True)
class Pki:
    folder: Path

    def crt(self, stem: str) -> Path:
        return self.folder / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.folder / f"{stem}.key"


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}")


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    pki = Pki(folder)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", "/CN=neofleet-sandbox-ca", "-keyout", str(pki.key("ca")),
             "-out", str(pki.crt("ca")))
    _signed(pki, "apiserver", "/CN=kube-apiserver",
            f"subjectAltName={','.join(SERVER_SANS)}\nextendedKeyUsage=serverAuth\n")
    for stem, subject in CLIENTS.items():
        _signed(pki, stem, subject, "extendedKeyUsage=clientAuth\n")
    _openssl("genrsa", "-out", str(pki.key("service-account")), "2048")
    _openssl("rsa", "-in", str(pki.key("service-account")), "-pubout",
             "-out", str(folder / "service-account.pub"))
    return pki


def _signed(pki: Pki, stem: str, subject: str, extensions: str) -> None:
    csr, ext = pki.folder / f"{stem}.csr", pki.folder / f"{stem}.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                   + extensions)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
             "-keyout", str(pki.key(stem)), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki.crt("ca")),
             "-CAkey", str(pki.key("ca")), "-CAcreateserial", "-days", "3650",
             "-extfile", str(ext), "-out", str(pki.crt(stem)))
    csr.unlink()
    ext.unlink()
