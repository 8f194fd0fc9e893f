"""Tree models end to end: every source library and task compiled through TL2cgen,
verified (natively, and under qemu for aarch64), run through DLRModel on both paths and
served; bad model files refused with messages that say what to do."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neofleet.bundle import open_bundle
from neofleet.compiler.errors import InputSpecError, ModelLoadError
from neofleet.compiler.pipeline import CompileRequest, compile_model
from neofleet.compiler.verify import Tolerance
from neofleet.runtime import DLRModel
from neofleet.runtime.errors import InputError
from tests.support.trees import FEATURES, TreeCase, library_predict, make_tree_model, tree_cases

pytestmark = pytest.mark.integration

CASES = {c.name: c for c in tree_cases()}
# every library and task is also cross-compiled for aarch64 and verified under qemu
AARCH64 = set(CASES)


def _compile(model: Path, framework: str, targets: list[str], out: Path,
             **kwargs: object) -> object:
    request = CompileRequest(model=model, framework=framework, inputs=[], targets=targets,
                             output=out, tolerance=Tolerance(), **kwargs)  # type: ignore[arg-type]
    return compile_model(request)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[TreeCase, Path, Path]]:
    """case name -> (case, model file, output folder) with native (+ aarch64) bundles."""
    root = tmp_path_factory.mktemp("trees")
    done = {}
    for name, case in CASES.items():
        model = make_tree_model(case, root / "models" / name)
        targets = ["native", "aarch64"] if name in AARCH64 else ["native"]
        result = _compile(model, case.framework, targets, root / "out" / name)
        assert result.ok, json.dumps(result.to_json(), indent=1)  # type: ignore[attr-defined]
        done[name] = (case, model, root / "out" / name)
    return done


def _fresh_rows(rows: int, dtype: str, seed: int = 11) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, FEATURES)) * 1.5
    x[np.random.default_rng(seed + 1).random(x.shape) < 0.03] = np.nan
    return x.astype(dtype)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bundle_matches_the_source_library_on_both_paths(
        name: str, compiled: dict[str, tuple[TreeCase, Path, Path]]) -> None:
    case, model, out = compiled[name]
    bundle = out / "native"
    meta = open_bundle(bundle).meta
    tree = meta.neofleet.backend_options["tree"]
    assert meta.neofleet.backend == "tl2cgen" and meta.neofleet.verification.passed
    assert (tree["task"], tree["num_feature"]) == (case.task, FEATURES)
    assert tree["num_tree"] >= 4 and tree["source_library_version"]
    assert meta.neofleet.source["library"] == tree["source_library"]
    expected_outputs = ["predictions"] if case.task == "regression" else ["probabilities",
                                                                          "label"]
    assert [o.name for o in meta.model.outputs] == expected_outputs
    assert meta.model.inputs[0].shape == [-1, FEATURES]
    dtype = meta.model.inputs[0].dtype
    for rows in (1, 37, 300):
        x = _fresh_rows(rows, dtype, seed=rows)
        if case.framework == "sklearn":
            x = np.nan_to_num(x)  # scikit-learn models here were trained without NaN
        want = library_predict(case, model, x)
        for variant in ("rows", "forest"):
            got = DLRModel(bundle, "cpu", variant=variant).run(x)
            _assert_matches(case, want, got, f"{variant} path, {rows} rows")
    auto = DLRModel(bundle).run({"data": x})
    _assert_matches(case, want, auto, "automatic path")


def _assert_matches(case: TreeCase, want: dict[str, np.ndarray], got: list[np.ndarray],
                    what: str) -> None:
    if "label" in want:
        np.testing.assert_array_equal(got[1], want["label"], err_msg=what)
    if "values" in want:
        values = want["values"]
        mine = got[0][:, 1] if case.task == "binary" and values.ndim == 1 else got[0]
        np.testing.assert_allclose(mine, values, rtol=1e-4, atol=1e-5, err_msg=what)


@pytest.mark.parametrize("name", sorted(AARCH64))
def test_aarch64_bundle_verified_under_qemu(
        name: str, compiled: dict[str, tuple[TreeCase, Path, Path]]) -> None:
    _, _, out = compiled[name]
    meta = open_bundle(out / "aarch64").meta
    verification = meta.neofleet.verification
    assert verification.passed and verification.method == "qemu-aarch64"
    assert "rows, forest" in verification.message
    assert meta.requirements.target_arch == "aarch64"
    assert meta.neofleet.backend_options["crossover"].startswith("default")
    with pytest.raises(Exception, match="aarch64"):
        DLRModel(out / "aarch64")


def test_crossover_is_measured_and_recorded(
        compiled: dict[str, tuple[TreeCase, Path, Path]]) -> None:
    _, _, out = compiled["xgb-binary"]
    options = open_bundle(out / "native").meta.neofleet.backend_options
    timings = options["path_timings_ms"]
    assert set(timings) == {"rows", "forest"} and "1024" in timings["rows"]
    assert options["crossover"].startswith(("forest path from", "rows path for every"))
    assert options["forest"] == "forest.npz"


def test_wrong_feature_count_at_run_time(compiled: dict[str, tuple[TreeCase, Path, Path]]) -> None:
    _, _, out = compiled["xgb-binary"]
    model = DLRModel(out / "native")
    with pytest.raises(InputError, match=rf"expects \[any, {FEATURES}\]"):
        model.run(np.zeros((3, FEATURES + 1), np.float32))


# ------------------------------------------------------------------ refusals
def _refused(tmp_path: Path, model: Path, framework: str, match: str,
             error: type[Exception] = ModelLoadError, **kwargs: object) -> None:
    with pytest.raises(error, match=match):
        _compile(model, framework, ["native"], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_pickles_and_joblib_files_are_refused_unread(tmp_path: Path) -> None:
    pickled = tmp_path / "model.json"  # a pickle, whatever the name says
    pickled.write_bytes(pickle.dumps({"not": "read"}))
    _refused(tmp_path, pickled, "xgboost", "never unpickles.*skops.io.dump")
    joblib_file = tmp_path / "model.joblib"
    joblib_file.write_bytes(b"\x78\x9c" + b"\x00" * 32)
    _refused(tmp_path, joblib_file, "sklearn", "pickle/joblib.*model.txt")


def test_truncated_files_are_refused(tmp_path: Path) -> None:
    for name in ("xgb-binary", "lgb-binary", "sk-rf-binary", "treelite-regression"):
        case = CASES[name]
        model = make_tree_model(case, tmp_path / name)
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        _refused(tmp_path / name, model, case.framework, "cannot read|parser crashed")


def test_unsupported_sklearn_estimator_is_refused(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from tests.support.trees import training_data

    x, y = training_data("binary")
    model = tmp_path / "lr.skops"
    sio.dump(LogisticRegression().fit(x, y), str(model))
    _refused(tmp_path, model, "sklearn", "holds a LogisticRegression; supported")


def test_mismatched_feature_counts_are_refused(tmp_path: Path) -> None:
    from neofleet.compiler.inputs import parse_input_decl

    model = make_tree_model(CASES["xgb-binary"], tmp_path)
    with pytest.raises(InputSpecError, match=f"N rows x {FEATURES} features"):
        compile_model(CompileRequest(model=model, framework="xgboost",
                                     inputs=[parse_input_decl("data:1x7")], targets=["native"],
                                     output=tmp_path / "out"))
    bad_rows = tmp_path / "rows.npy"
    np.save(bad_rows, np.zeros((10, FEATURES + 2)))
    _refused(tmp_path, model, "xgboost", f"rows x {FEATURES} features", InputSpecError,
             sample_data=bad_rows)


def test_gcc_time_is_bounded(tmp_path: Path) -> None:
    model = make_tree_model(CASES["xgb-binary"], tmp_path)
    result = _compile(model, "xgboost", ["native"], tmp_path / "out", toolchain_timeout_s=0.01)
    assert not result.ok  # type: ignore[attr-defined]
    (row,) = result.to_json()["targets"]  # type: ignore[attr-defined]
    assert row["reason"] == "BuildFailed" and "did not finish within" in row["message"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_sample_data_annotates_branches(tmp_path: Path) -> None:
    model = make_tree_model(CASES["lgb-regression"], tmp_path)
    rows = tmp_path / "rows.npy"
    np.save(rows, _fresh_rows(200, "float64"))
    result = _compile(model, "lightgbm", ["native"], tmp_path / "out", sample_data=rows)
    assert result.ok  # type: ignore[attr-defined]
    assert open_bundle(tmp_path / "out" / "native").meta.neofleet.backend_options["annotated"]


def test_cli_refuses_a_pickle_with_one_line(tmp_path: Path) -> None:
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps([1, 2, 3]))
    done = subprocess.run([sys.executable, "-m", "neofleet.cli", "compile", str(pickled),
                           "--framework", "sklearn", "--target", "native", "--output",
                           str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("neofleet: InvalidModel: model.pkl")


# ------------------------------------------------------------------ serving
def test_server_serves_a_tree_bundle_with_any_number_of_rows(
        compiled: dict[str, tuple[TreeCase, Path, Path]], serve: Callable[..., Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, _, out = compiled["xgb-multiclass"]
    bundle = out / "native"
    server = serve(bundle, "--name", "trees", "--max-batch", "64", "--batch-timeout-ms", "2")
    meta = server.client.get("/v2/models/trees").json()
    assert meta["inputs"] == [{"name": "data", "datatype": "FP32", "shape": [-1, FEATURES]}]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]
    model = DLRModel(bundle)

    def infer(rows: int) -> None:
        x = _fresh_rows(rows, "float32", seed=100 + rows)
        body = {"inputs": [{"name": "data", "shape": [rows, FEATURES], "datatype": "FP32",
                            "data": np.nan_to_num(x, nan=0.0).ravel().tolist()}]}
        response = server.client.post("/v2/models/trees/infer", json=body)
        assert response.status_code == 200, response.text
        probabilities, label = response.json()["outputs"]
        want = model.run(np.nan_to_num(x, nan=0.0))
        assert probabilities["shape"] == [rows, 3] and label["datatype"] == "INT64"
        np.testing.assert_allclose(np.reshape(probabilities["data"], (rows, 3)), want[0],
                                   rtol=1e-6)
        np.testing.assert_array_equal(label["data"], want[1])

    with ThreadPoolExecutor(8) as pool:  # concurrent requests of 1..40 rows, batched
        list(pool.map(infer, [1, 3, 40, 7, 1, 12, 25, 2] * 3))
    wrong = {"inputs": [{"name": "data", "shape": [2, FEATURES + 1], "datatype": "FP32",
                         "data": [0.0] * (2 * (FEATURES + 1))}]}
    response = server.client.post("/v2/models/trees/infer", json=wrong)
    assert response.status_code == 400
    assert f"[any, {FEATURES}]" in response.json()["error"] or "1..64" in response.json()["error"]
