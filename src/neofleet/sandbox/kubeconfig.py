"""Kubeconfig files for the sandbox (JSON, which every YAML reader accepts)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from neofleet.sandbox.pki import Pki


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(server: str, ca: Path, user: dict[str, str], name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": name, "preferences": {},
        "clusters": [{"name": "neofleet-sandbox", "cluster": {
            "server": server, "certificate-authority-data": _b64(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": "neofleet-sandbox", "user": name}}],
    }


def write_cert_kubeconfig(path: Path, server: str, pki: Pki, stem: str) -> Path:
    user = {"client-certificate-data": _b64(pki.crt(stem)),
            "client-key-data": _b64(pki.key(stem))}
    return _write(path, kubeconfig(server, pki.crt("ca"), user, stem))


def write_token_kubeconfig(path: Path, server: str, pki: Pki, name: str, token: str,
                           namespace: str) -> Path:
    config = kubeconfig(server, pki.crt("ca"), {"token": token}, name)
    contexts = config["contexts"]
    assert isinstance(contexts, list)
    contexts[0]["context"]["namespace"] = namespace
    return _write(path, config)


def _write(path: Path, config: dict[str, object]) -> Path:
    path.touch(mode=0o600)
    path.write_text(json.dumps(config, indent=2))
    return path
