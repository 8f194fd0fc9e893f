"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution).

    with RegistryServer() as registry:
        push_bundle(bundle_dir, f"oci://{registry.host}/models/resnet:v1")

Storage is a temp dir (``registry.root``); ``blob_path`` finds a blob's file there so a
test can play a registry that serves tampered bytes.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from neofleet.sandbox.addons.localserver import LocalServer, find_binary, free_port

__all__ = ["RegistryServer", "free_port", "registry_binary"]

BINARY = "/usr/bin/docker-registry"

_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
"""


def registry_binary() -> str | None:
    """The docker-registry binary, or None when it is not installed."""
    return find_binary(BINARY, "docker-registry")


class RegistryServer(LocalServer):
    """Starts ``docker-registry serve`` on a free 127.0.0.1 port; ``stop()`` ends it."""

    NAME = "registry"
    READY_PATH = "/v2/"
    POLL_SECONDS = 0.02

    def __init__(self, *, start_timeout: float = 15.0, attempts: int = 3) -> None:
        binary = registry_binary()
        if binary is None:
            raise FileNotFoundError(
                "docker-registry is not installed (apt-get install docker-registry)"
            )
        super().__init__()
        self._binary = binary
        self.root = self._dir / "storage"
        self._start_with_retries(start_timeout, attempts)

    def _argv(self) -> list[str]:
        config = self._dir / "config.yml"
        config.write_text(
            _CONFIG.format(root=self.root, port=self.port, secret=secrets.token_hex(16))
        )
        return [self._binary, "serve", str(config)]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_path(self, digest: str) -> Path:
        """The file the registry serves for ``digest`` (a blob or a manifest)."""
        algorithm, _, hexdigest = digest.partition(":")
        return (
            self.root / "docker/registry/v2/blobs" / algorithm / hexdigest[:2] / hexdigest / "data"
        )
