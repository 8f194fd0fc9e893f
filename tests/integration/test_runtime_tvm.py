"""The runtime on real TVM bundles: slim loading, version checks, parallel threads."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from neofleet.bundle import open_bundle, write_bundle
from neofleet.compiler.pipeline import CompileRequest, compile_model
from neofleet.runtime import DLRModel
from neofleet.runtime.errors import IncompatibleBundleError
from tests.conftest import EXAMPLE_ONNX, ROOT

pytestmark = pytest.mark.integration


def _ort_reference(x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(EXAMPLE_ONNX), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"image": x})[0])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rt")
    found = {}
    for backend in ("tvm", "onnxruntime"):
        result = compile_model(CompileRequest(
            model=EXAMPLE_ONNX, framework="onnx", inputs=[], targets=["native"],
            output=root / backend, backend=backend, tuning_db=None))
        bundle = result.targets[0].bundle
        assert bundle is not None, result.targets[0].error
        found[backend] = bundle.path
    return found


def test_tvm_bundle_carries_its_runtime_library(bundles: dict[str, Path]) -> None:
    bundle = open_bundle(bundles["tvm"])
    assert "libtvm_runtime.so" in bundle.manifest.files
    assert bundle.meta.neofleet.backend_options["runtime_library"] == "libtvm_runtime.so"
    assert bundle.meta.neofleet.compiler["tvm_ffi"]


@pytest.mark.parametrize("backend", ["tvm", "onnxruntime"])
def test_many_threads_on_one_model_get_correct_results(bundles: dict[str, Path],
                                                       backend: str) -> None:
    model = DLRModel(bundles[backend], "cpu")
    rng = np.random.default_rng(11)
    inputs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(16)]
    expected = [_ort_reference(x) for x in inputs]
    failures: list[str] = []

    def worker(index: int) -> None:
        for step in range(40):
            k = (index + step) % len(inputs)
            out = model.run({"image": inputs[k]})[0]
            if not np.allclose(out, expected[k], rtol=1e-4, atol=1e-6):
                failures.append(f"thread {index} step {step}: wrong result")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def _rewrite(bundle_dir: Path, dest: Path, *, tvm_ffi: str | None = None,
             runtime_bytes: bytes | None = None) -> Path:
    bundle = open_bundle(bundle_dir)
    section = bundle.meta.neofleet
    compiler = {**section.compiler, **({"tvm_ffi": tvm_ffi} if tvm_ffi else {})}
    meta = bundle.meta.model_copy(update={"neofleet": section.model_copy(
        update={"compiler": compiler})})
    files = {name: bundle_dir / name for name in bundle.manifest.files
             if name not in {"compiled.meta", "compiled_model.json"}}
    if runtime_bytes is not None:
        (dest.parent / "lib.so").write_bytes(runtime_bytes)
        files["libtvm_runtime.so"] = dest.parent / "lib.so"
    graph = {"backend": "tvm"}
    return write_bundle(dest, files=files, artifact="compiled.so", backend="tvm", meta=meta,
                        graph=graph).path


def test_tvm_ffi_version_mismatch_is_refused_naming_both(bundles: dict[str, Path],
                                                         tmp_path: Path) -> None:
    other = _rewrite(bundles["tvm"], tmp_path / "b", tvm_ffi="0.0.1")
    with pytest.raises(IncompatibleBundleError, match="compiled with apache-tvm-ffi 0.0.1; "
                                                      "this runtime has 0.1"):
        DLRModel(other, "cpu")


def test_a_second_different_runtime_library_is_refused(bundles: dict[str, Path],
                                                       tmp_path: Path) -> None:
    DLRModel(bundles["tvm"], "cpu")
    library = (bundles["tvm"] / "libtvm_runtime.so").read_bytes()
    other = _rewrite(bundles["tvm"], tmp_path / "b", runtime_bytes=library + b"\0")
    with pytest.raises(IncompatibleBundleError, match="already runs libtvm_runtime.so"):
        DLRModel(other, "cpu")


def test_runtime_needs_neither_tvm_nor_torch_nor_the_compiler(bundles: dict[str, Path]) -> None:
    """A process where tvm, torch, onnx and neofleet.compiler cannot be imported runs both
    bundles: the slim runtime path."""
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{"tvm", "torch", "onnx"}} or \\
                        name.startswith("neofleet.compiler"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        import neofleet.dlr as dlr
        x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
        a = dlr.DLRModel({str(bundles["tvm"])!r}, "cpu").run(x)[0]
        b = dlr.DLRModel({str(bundles["onnxruntime"])!r}, "cpu").run(x)[0]
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6), (a, b)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {{"tvm", "torch", "onnx"}})
        print("ok", heavy)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok []"
