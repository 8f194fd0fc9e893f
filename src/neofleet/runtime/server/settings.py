"""From command-line options, environment and the bundle to the server's settings (pure).

Labels: ``--name/--revision/--pool/--target`` win over ``NEOFLEET_MODEL_NAME``,
``NEOFLEET_REVISION``, ``NEOFLEET_POOL``, ``NEOFLEET_TARGET`` (what the operator sets), which
win over the bundle: the model name defaults to the stem of the source model's file name
(else the bundle folder's name), the revision to the first 12 hex digits of the bundle
digest, the pool to ``default``, the target to ``Requirements.TargetDevice``. Every label
value must be a short name (``[A-Za-z0-9][A-Za-z0-9_.-]*``, at most 128 characters): they
are URL path segments and metric label values.

The shutdown delay (``--shutdown-delay-seconds``, else ``NEOFLEET_SHUTDOWN_DELAY``, else 0):
seconds between the shutdown signal and the drain, while readiness is already 503 and
requests are still served, so a load balancer stops routing here before the port closes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from neofleet.runtime.errors import ServerConfigError
from neofleet.runtime.server.metrics import Labels

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_INVALID = re.compile(r"[^A-Za-z0-9_.-]+")
DEFAULT_PORT = 8080
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_BATCH_TIMEOUT_MS = 5.0
DEFAULT_DRAIN_SECONDS = 10
MAX_DEFAULT_THREADS = 4


@dataclass(frozen=True)
class ServeOptions:
    """What ``neofleet serve`` was given; None means not given."""

    source: str
    name: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    threads: int | None = None
    max_batch: int | None = None
    batch_timeout_ms: float | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    revision: str | None = None
    pool: str | None = None
    target: str | None = None
    cache_dir: Path | None = None
    drain_seconds: int = DEFAULT_DRAIN_SECONDS
    shutdown_delay_seconds: float | None = None
    log_level: str = "info"


@dataclass(frozen=True)
class BundleFacts:
    """What the verified bundle says about itself."""

    directory: str
    source_filename: str | None
    target: str
    digest: str
    backend: str


@dataclass(frozen=True)
class ServerSettings:
    labels: Labels
    threads: int                  # worker threads running the model
    num_threads: int | None       # the backend's own threads (DLRModel num_threads)
    max_queue: int
    max_body_bytes: int
    max_batch: int | None
    batch_timeout_s: float
    host: str
    port: int
    drain_seconds: int
    shutdown_delay_s: float       # readiness 503 but still serving, before the drain
    log_level: str

    @property
    def version(self) -> str:
        """The OIP model version: the revision."""
        return self.labels.revision


def resolve_settings(options: ServeOptions, env: Mapping[str, str], facts: BundleFacts,
                     cpu_count: int) -> ServerSettings:
    _check_ranges(options)
    labels = Labels(
        model=_label("model name", options.name, env.get("NEOFLEET_MODEL_NAME"),
                     default_model_name(facts)),
        revision=_label("revision", options.revision, env.get("NEOFLEET_REVISION"),
                        facts.digest.partition(":")[2][:12] or "0"),
        pool=_label("pool", options.pool, env.get("NEOFLEET_POOL"), "default"),
        target=_label("target", options.target, env.get("NEOFLEET_TARGET"),
                      sanitize(facts.target)),
    )
    timeout_ms = options.batch_timeout_ms
    return ServerSettings(
        labels=labels,
        threads=options.threads or max(1, min(MAX_DEFAULT_THREADS, cpu_count)),
        num_threads=options.threads,
        max_queue=options.max_queue,
        max_body_bytes=options.max_body_bytes,
        max_batch=options.max_batch,
        batch_timeout_s=(DEFAULT_BATCH_TIMEOUT_MS if timeout_ms is None else timeout_ms) / 1000,
        host=options.host,
        port=options.port,
        drain_seconds=options.drain_seconds,
        shutdown_delay_s=shutdown_delay(options.shutdown_delay_seconds,
                                        env.get("NEOFLEET_SHUTDOWN_DELAY")),
        log_level=options.log_level,
    )


def shutdown_delay(flag: float | None, env: str | None) -> float:
    """``--shutdown-delay-seconds``, else ``NEOFLEET_SHUTDOWN_DELAY``, else 0."""
    if flag is not None:
        value, what = flag, "--shutdown-delay-seconds"
    elif env:
        what = "NEOFLEET_SHUTDOWN_DELAY"
        try:
            value = float(env)
        except ValueError:
            raise ServerConfigError(f"{what} {env[:50]!r} is not a number of seconds") from None
    else:
        return 0.0
    if not (math.isfinite(value) and value >= 0):
        raise ServerConfigError(f"{what} must be a number of seconds, not negative")
    return value


def _check_ranges(options: ServeOptions) -> None:
    checks = [
        (options.threads is None or options.threads >= 1, "--threads must be at least 1"),
        (options.max_queue >= 1, "--max-queue must be at least 1"),
        (options.max_body_bytes >= 1, "--max-body-bytes must be at least 1"),
        (options.max_batch is None or options.max_batch >= 1, "--max-batch must be at least 1"),
        (options.batch_timeout_ms is None or options.batch_timeout_ms >= 0,
         "--batch-timeout-ms must not be negative"),
        (options.batch_timeout_ms is None or options.max_batch is not None,
         "--batch-timeout-ms needs --max-batch"),
        (options.drain_seconds >= 0, "--drain-seconds must not be negative"),
        (0 <= options.port < 65536, "--port must be 0..65535"),
    ]
    for ok, message in checks:
        if not ok:
            raise ServerConfigError(message)


def _label(what: str, flag: str | None, env: str | None, default: str) -> str:
    value = flag if flag is not None else (env if env else default)
    if not _NAME.fullmatch(value):
        raise ServerConfigError(f"{what} {value[:200]!r} is not a valid name: letters, digits, "
                                "'_', '.', '-', starting with a letter or digit, at most 128")
    return value


def default_model_name(facts: BundleFacts) -> str:
    if facts.source_filename:
        return sanitize(Path(facts.source_filename).stem)
    return sanitize(Path(facts.directory).name)


def sanitize(text: str) -> str:
    """``text`` made into a valid name (``model`` when nothing is left)."""
    cleaned = _INVALID.sub("-", text).lstrip("_.-")[:128]
    return cleaned or "model"
