"""Server settings (flags > environment > bundle), metrics registry, bundle source paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from neofleet.bundle.errors import ReferenceError_
from neofleet.runtime.errors import ServerConfigError
from neofleet.runtime.server.metrics import Labels, ServerMetrics, batch_buckets
from neofleet.runtime.server.settings import BundleFacts, ServeOptions, resolve_settings
from neofleet.runtime.server.source import cache_path, default_cache_dir

FACTS = BundleFacts(directory="/models/out/native", source_filename="tiny cnn.onnx",
                    target="native", digest="sha256:" + "ab" * 32, backend="tvm")


def test_defaults_come_from_the_bundle() -> None:
    settings = resolve_settings(ServeOptions(source="b"), {}, FACTS, cpu_count=16)
    assert settings.labels == Labels(model="tiny-cnn", revision="abababababab", pool="default",
                                     target="native")
    assert settings.version == "abababababab"
    assert (settings.threads, settings.num_threads) == (4, None)
    assert settings.host == "127.0.0.1" and settings.max_queue == 64
    assert settings.max_batch is None and settings.batch_timeout_s == pytest.approx(0.005)


def test_directory_name_when_the_bundle_names_no_source_file() -> None:
    facts = BundleFacts("/x/my_model", None, "native", "sha256:" + "0" * 64, "onnxruntime")
    assert resolve_settings(ServeOptions(source="b"), {}, facts, 1).labels.model == "my_model"


def test_flags_win_over_environment_which_wins_over_the_bundle() -> None:
    env = {"NEOFLEET_MODEL_NAME": "env-model", "NEOFLEET_REVISION": "r7",
           "NEOFLEET_POOL": "edge-arm", "NEOFLEET_TARGET": "rasp4b"}
    from_env = resolve_settings(ServeOptions(source="b"), env, FACTS, 2).labels
    assert from_env == Labels("env-model", "r7", "edge-arm", "rasp4b")
    options = ServeOptions(source="b", name="flag", revision="r8", pool="p", target="t",
                           threads=3, max_batch=4, batch_timeout_ms=2)
    settings = resolve_settings(options, env, FACTS, 2)
    assert settings.labels == Labels("flag", "r8", "p", "t")
    assert (settings.threads, settings.num_threads) == (3, 3)
    assert settings.batch_timeout_s == pytest.approx(0.002)


@pytest.mark.parametrize(("options", "message"), [
    (ServeOptions(source="b", name="bad/name"), "model name 'bad/name' is not a valid name"),
    (ServeOptions(source="b", pool="x" * 200), "pool 'x+' is not a valid name"),
    (ServeOptions(source="b", batch_timeout_ms=3), "--batch-timeout-ms needs --max-batch"),
    (ServeOptions(source="b", max_queue=0), "--max-queue must be at least 1"),
    (ServeOptions(source="b", threads=0), "--threads must be at least 1"),
])
def test_bad_options_are_refused(options: ServeOptions, message: str) -> None:
    with pytest.raises(ServerConfigError, match=message):
        resolve_settings(options, {}, FACTS, 2)


def test_metrics_live_in_their_own_registry_with_fixed_labels() -> None:
    labels = Labels("m", "r1", "p", "t")
    first = ServerMetrics(labels, backend="tvm", bundle_digest="sha256:1", max_batch=None)
    second = ServerMetrics(labels, backend="tvm", bundle_digest="sha256:1", max_batch=8)
    first.answered("ok", 0.0002)
    first.answered("client_error", 0.0001, "InvalidInput")
    first.queued([0.00001])
    first.loaded(1.5)
    text = first.render().decode()
    assert ('neofleet_inference_requests_total{model="m",pool="p",revision="r1",'
            'status="ok",target="t"} 1.0') in text
    assert ('neofleet_inference_errors_total{model="m",pool="p",reason="InvalidInput",'
            'revision="r1",target="t"} 1.0') in text
    assert ('neofleet_model_info{backend="tvm",bundle_digest="sha256:1",model="m",pool="p",'
            'revision="r1",target="t"} 1.0') in text
    assert 'neofleet_model_load_duration_seconds{model="m"' in text
    assert 'le="0.0001"' in text and 'le="10.0"' in text
    assert "neofleet_inference_batch_size" not in text
    second_text = second.render().decode()
    assert "neofleet_inference_batch_size_bucket" in second_text
    assert 'neofleet_inference_requests_total{model="m",pool="p",revision="r1",status="ok",' \
           'target="t"} 0.0' in second_text  # registries are not shared


def test_batch_buckets_reach_max_batch() -> None:
    assert batch_buckets(1) == (1.0,)
    assert batch_buckets(6) == (1.0, 2.0, 4.0, 6.0)
    assert batch_buckets(8) == (1.0, 2.0, 4.0, 8.0)


def test_cache_path_needs_a_digest(tmp_path: Path) -> None:
    digest = "sha256:" + "cd" * 32
    assert cache_path(f"oci://127.0.0.1:5000/m/x@{digest}", tmp_path) == \
        tmp_path / ("sha256-" + "cd" * 32)
    with pytest.raises(ReferenceError_, match="serve needs a digest"):
        cache_path("oci://127.0.0.1:5000/m/x:v1", tmp_path)


def test_default_cache_dir(tmp_path: Path) -> None:
    assert default_cache_dir({"NEOFLEET_CACHE": str(tmp_path)}) == tmp_path / "bundles"
    assert default_cache_dir({}) == Path.home() / ".cache" / "neofleet" / "bundles"


def test_shutdown_delay_flag_wins_over_environment_which_wins_over_zero() -> None:
    def delay(options: ServeOptions, env: dict[str, str]) -> float:
        return resolve_settings(options, env, FACTS, 2).shutdown_delay_s

    assert delay(ServeOptions(source="b"), {}) == 0
    assert delay(ServeOptions(source="b"), {"NEOFLEET_SHUTDOWN_DELAY": ""}) == 0
    assert delay(ServeOptions(source="b"), {"NEOFLEET_SHUTDOWN_DELAY": "7.5"}) == 7.5
    assert delay(ServeOptions(source="b", shutdown_delay_seconds=0),
                 {"NEOFLEET_SHUTDOWN_DELAY": "7.5"}) == 0


@pytest.mark.parametrize(("flag", "env", "message"), [
    (-1.0, None, "--shutdown-delay-seconds must be a number of seconds, not negative"),
    (float("nan"), None, "--shutdown-delay-seconds must be a number"),
    (None, "-2", "NEOFLEET_SHUTDOWN_DELAY must be a number of seconds, not negative"),
    (None, "inf", "NEOFLEET_SHUTDOWN_DELAY must be a number"),
    (None, "soon", "NEOFLEET_SHUTDOWN_DELAY 'soon' is not a number of seconds"),
])
def test_bad_shutdown_delays_are_refused(flag: float | None, env: str | None,
                                         message: str) -> None:
    environment = {} if env is None else {"NEOFLEET_SHUTDOWN_DELAY": env}
    with pytest.raises(ServerConfigError, match=message):
        resolve_settings(ServeOptions(source="b", shutdown_delay_seconds=flag), environment,
                         FACTS, 2)
