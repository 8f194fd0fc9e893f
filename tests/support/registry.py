"""A real OCI registry for tests: Debian's ``docker-registry`` (CNCF distribution).

    with RegistryServer() as registry:
        push_bundle(bundle_dir, f"oci://{registry.host}/models/resnet:v1")

Storage is a temp dir (``registry.root``); ``blob_path`` finds a blob's file there so a
test can play a registry that serves tampered bytes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

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
    if os.access(BINARY, os.X_OK):
        return BINARY
    return shutil.which("docker-registry")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryServer:
    """Starts ``docker-registry serve`` on a free 127.0.0.1 port; ``stop()`` ends it."""

    def __init__(self, *, start_timeout: float = 15.0, attempts: int = 3) -> None:
        binary = registry_binary()
        if binary is None:
            raise FileNotFoundError(
                "docker-registry is not installed (apt-get install docker-registry)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="neofleet-registry-"))
        self.root = self._dir / "storage"
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0
        try:
            for _ in range(attempts):  # another process may grab the port in between
                if self._start(binary, start_timeout):
                    return
            raise RuntimeError(f"docker-registry did not start: {self.log_text()}")
        except BaseException:
            self.stop()
            raise

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def blob_path(self, digest: str) -> Path:
        """The file the registry serves for ``digest`` (a blob or a manifest)."""
        algorithm, _, hexdigest = digest.partition(":")
        return (
            self.root / "docker/registry/v2/blobs" / algorithm / hexdigest[:2] / hexdigest / "data"
        )

    def log_text(self) -> str:
        path = self._dir / "registry.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _start(self, binary: str, timeout: float) -> bool:
        self.port = free_port()
        config = self._dir / "config.yml"
        config.write_text(
            _CONFIG.format(root=self.root, port=self.port, secret=secrets.token_hex(16))
        )
        with (self._dir / "registry.log").open("wb") as log:
            self._process = subprocess.Popen(
                [binary, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if self._wait_ready(timeout):
            return True
        self._kill()
        return False

    def _wait_ready(self, timeout: float) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        return False

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def stop(self) -> None:
        """Terminate the registry by PID (kill if it lingers) and delete its storage."""
        self._kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
