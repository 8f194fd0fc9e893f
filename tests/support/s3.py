"""A real S3-compatible server for tests: moto's standalone server (``moto.server``) on a
free 127.0.0.1 port, with IAM authentication switched on after setup, so it checks every
SigV4 signature and answers 403 to wrong or missing ones.

    with S3Server() as store:              # one IAM user made, authentication on
        store.put_object("models", "m.onnx", data)
        env = {"AWS_ACCESS_KEY_ID": store.credentials.access_key, ...}

moto runs in its own interpreter (``python3 -m moto.server``): botocore pins
``python-dateutil<3``, which the kubernetes client in the project venv cannot share.
``scripts/install.sh`` makes one, ``.venv-moto``, with the versions in
``requirements-moto.lock``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from neofleet.compiler.s3 import Credentials, sign
from tests.support.process import LocalServer

REPO = Path(__file__).resolve().parents[2]
_BOOTSTRAP = Credentials("AKIDBOOTSTRAP", "bootstrap")   # any key works before enforce_auth
_POLICY = {"Version": "2012-10-17",
           "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def moto_python() -> str | None:
    """An interpreter that can run ``moto.server``, or None."""
    candidates = [os.environ.get("NEOFLEET_MOTO_PYTHON"), str(REPO / ".venv-moto/bin/python"),
                  shutil.which("python3")]
    for python in filter(None, candidates):
        if os.access(python, os.X_OK) and subprocess.run(
                [python, "-c", "import moto.server"], capture_output=True).returncode == 0:
            return python
    return None


class S3Server(LocalServer):
    NAME = "moto-s3"
    READY_PATH = "/moto-api/"

    def __init__(self, *, start_timeout: float = 30.0, attempts: int = 3) -> None:
        python = moto_python()
        if python is None:
            raise FileNotFoundError("no python with moto[server] (run scripts/install.sh)")
        super().__init__()
        self._python = python
        self._buckets: set[str] = set()
        self._signer = _BOOTSTRAP
        self._start_with_retries(start_timeout, attempts)
        try:
            self.credentials = self._create_user("neofleet-test")
            self._enforce_auth()
            self._signer = self.credentials
        except BaseException:
            self.stop()
            raise

    def _argv(self) -> list[str]:
        return [self._python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def _create_user(self, name: str) -> Credentials:
        """An IAM user allowed s3:*, and its new access key."""
        self._iam(Action="CreateUser", UserName=name)
        answer = self._iam(Action="CreateAccessKey", UserName=name)
        self._iam(Action="PutUserPolicy", UserName=name, PolicyName="read",
                  PolicyDocument=json.dumps(_POLICY))
        found = {tag: re.search(f"<{tag}>([^<]+)</{tag}>", answer)
                 for tag in ("AccessKeyId", "SecretAccessKey")}
        assert all(found.values()), answer
        return Credentials(found["AccessKeyId"].group(1),  # type: ignore[union-attr]
                           found["SecretAccessKey"].group(1))  # type: ignore[union-attr]

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        if bucket not in self._buckets:
            self._call("PUT", f"/{bucket}", b"")
            self._buckets.add(bucket)
        self._call("PUT", f"/{bucket}/{urllib.parse.quote(key)}", data,
                   {"content-type": "application/octet-stream"})

    def _enforce_auth(self) -> None:
        """From now on every request must carry a valid signature of a known key."""
        request = urllib.request.Request(self.url + "/moto-api/reset-auth", data=b"0",
                                         headers={"content-type": "text/plain"},
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def _iam(self, **params: str) -> str:
        body = urllib.parse.urlencode({**params, "Version": "2010-05-08"}).encode()
        return self._call("POST", "/", body,
                          {"content-type": "application/x-www-form-urlencoded"}, "iam")

    def _call(self, method: str, path: str, body: bytes,
              headers: dict[str, str] | None = None, service: str = "s3") -> str:
        payload = hashlib.sha256(body).hexdigest()
        signed = sign(method, self.url + path, {"x-amz-content-sha256": payload, **(headers or {})},
                      self._signer, "us-east-1", service=service, payload_sha256=payload)
        request = urllib.request.Request(self.url + path, data=body or None, method=method,
                                         headers=signed)
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode())
