"""Fetch ``s3://BUCKET/KEY`` models from AWS S3 or any S3-compatible store (MinIO, Ceph RGW,
R2), signed with AWS Signature Version 4.

Why not boto3: it is 80 MB with botocore, and botocore pins ``python-dateutil<3`` while the
kubernetes client needs ``>=3``; one signed GET is all a compile pod needs.

Configuration comes from the standard AWS environment variables, which the operator fills
from the Secret named in ``spec.model.credentialsSecret``:

- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``; without
  them the request is anonymous (public buckets);
- ``AWS_REGION`` or ``AWS_DEFAULT_REGION`` (default ``us-east-1``);
- ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for S3-compatible stores: path-style
  addressing (``ENDPOINT/BUCKET/KEY``); without one, AWS virtual-hosted style over https.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNRESERVED = "-_.~"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        parts = urllib.parse.urlsplit(uri)
        key = parts.path.lstrip("/")
        if parts.scheme != "s3" or not parts.netloc or not key:
            raise ValueError(f"{uri!r} is not s3://BUCKET/KEY")
        return cls(parts.netloc, key)


def credentials_from_env(env: Mapping[str, str]) -> Credentials | None:
    access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not access or not secret:
        return None
    return Credentials(access, secret, env.get("AWS_SESSION_TOKEN") or None)


def region_from_env(env: Mapping[str, str]) -> str:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"


def object_url(location: S3Location, env: Mapping[str, str]) -> str:
    """Path-style on a configured endpoint, virtual-hosted style on AWS."""
    key = quote_path(location.key)
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        return f"{endpoint.rstrip('/')}/{quote_path(location.bucket)}/{key}"
    return f"https://{location.bucket}.s3.{region_from_env(env)}.amazonaws.com/{key}"


def quote_path(path: str) -> str:
    """URI-encode every byte but unreserved ones, keeping '/' (S3 does not double-encode)."""
    return urllib.parse.quote(path, safe="/" + UNRESERVED)


def signed_get_headers(url: str, env: Mapping[str, str] | None = None,
                       now: dt.datetime | None = None) -> dict[str, str]:
    """The headers of a SigV4-signed GET of ``url`` (none but the payload hash if anonymous)."""
    env = os.environ if env is None else env
    creds = credentials_from_env(env)
    headers = {"x-amz-content-sha256": EMPTY_SHA256}
    if creds is None:
        return headers
    return sign("GET", url, headers, creds, region_from_env(env), now=now)


def sign(method: str, url: str, headers: Mapping[str, str], creds: Credentials, region: str,
         *, service: str = "s3", now: dt.datetime | None = None,
         payload_sha256: str = EMPTY_SHA256) -> dict[str, str]:
    """``headers`` plus ``x-amz-date``, the session token and ``Authorization`` (SigV4)."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    parts = urllib.parse.urlsplit(url)
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed["host"] = parts.netloc
    signed["x-amz-date"] = stamp
    if creds.session_token:
        signed["x-amz-security-token"] = creds.session_token
    names = ";".join(sorted(signed))
    canonical = "\n".join([
        method, parts.path or "/", _canonical_query(parts.query),
        "".join(f"{name}:{signed[name]}\n" for name in sorted(signed)),
        names, payload_sha256])
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _signing_key(creds.secret_key, stamp[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    result = {k: v for k, v in signed.items() if k != "host"}
    result["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                               f"SignedHeaders={names}, Signature={signature}")
    return result


def _canonical_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{urllib.parse.quote(k, safe=UNRESERVED)}="
                    f"{urllib.parse.quote(v, safe=UNRESERVED)}" for k, v in sorted(pairs))


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
