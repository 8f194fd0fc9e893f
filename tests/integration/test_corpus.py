"""Every model of the real-model corpus compiles with ``--backend auto`` for this host
and passes verification against its framework's own runtime; the bundle gives the same
outputs through ``DLRModel`` and through ``neofleet serve``; three of them also compile
for aarch64, verified under qemu. (Timings: ``benchmarks/compile_bench.py --corpus``.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.corpus import DATATYPES, entries, input_flags, model_path

pytestmark = pytest.mark.integration

COMPILED = entries(frameworks=("onnx", "xgboost", "lightgbm", "sklearn"))
AARCH64 = ("ocr-cls-mobile-v2", "silero-vad-v6", "lgbm-breast-cancer")


def _compile(entry: dict[str, Any], target: str, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "neofleet.cli", "compile", str(model_path(entry)),
               "--framework", entry["framework"], *input_flags(entry), "--target", target,
               "--output", str(out), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, f"{entry['name']}: {done.stderr[-3000:]}"
    result = json.loads(done.stdout)["targets"][0]
    assert result["status"] == "Succeeded" and result["verification"]["passed"], result
    return dict(result)


def _source(entry: dict[str, Any], work: Path) -> Any:
    from neofleet.compiler.ingest import load_model
    from neofleet.compiler.inputs import parse_input_decl

    flags = input_flags(entry)
    decls = [parse_input_decl(flags[i + 1]) for i in range(0, len(flags), 2)]
    return load_model(model_path(entry), entry["framework"], decls, work)


def _agree(name: str, want: list[np.ndarray], got: list[np.ndarray]) -> None:
    from neofleet.compiler.verify import Tolerance, compare_outputs

    verdict = compare_outputs(want, [np.asarray(g) for g in got], Tolerance())
    assert verdict.passed, f"{name}: {verdict.message}"


def _infer_rest(url: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import httpx

    body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": DATATYPES[str(v.dtype)],
                        "data": v.ravel().tolist()} for k, v in feed.items()]}
    answer = httpx.post(f"{url}/v2/models/corpus/infer", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return [np.asarray(o["data"], dtype=np.float64).reshape(o["shape"])
            for o in answer.json()["outputs"]]


@pytest.mark.parametrize("entry", COMPILED, ids=[e["name"] for e in COMPILED])
def test_the_corpus_compiles_for_this_host_and_serves(entry: dict[str, Any], tmp_path: Path,
                                                      serve: Any) -> None:
    from neofleet.runtime import DLRModel

    result = _compile(entry, "native", tmp_path / "out")
    bundle = tmp_path / "out" / "native"
    source = _source(entry, tmp_path / "source")
    feed = source.sample_inputs(1)            # not the sample the compiler timed on
    want = source.reference(feed)
    _agree(entry["name"], want, DLRModel(str(bundle), "cpu").run(feed))
    server = serve(bundle, "--name", "corpus")
    # JSON has no NaN (tree samples have missing values): REST gets them as zeros
    feed = {k: np.nan_to_num(v) if v.dtype.kind == "f" else v for k, v in feed.items()}
    want = source.reference(feed)
    served = _infer_rest(server.url, feed)
    _agree(entry["name"], [w.astype(np.float64) if w.dtype.kind == "f" else w for w in want],
           [s.astype(w.dtype) if w.dtype.kind != "f" else s for s, w in
            zip(served, want, strict=True)])
    print(f"\n{entry['name']}: {result['backend']} {result['selection']['rule']}, "
          f"{(result.get('benchmark') or {}).get('median_ms')} ms")


@pytest.mark.parametrize("name", AARCH64)
def test_corpus_models_compile_for_aarch64_verified_under_qemu(name: str,
                                                               tmp_path: Path) -> None:
    entry = next(e for e in COMPILED if e["name"] == name)
    result = _compile(entry, "aarch64", tmp_path / "out")
    assert result["verification"]["method"] == "qemu-aarch64"
