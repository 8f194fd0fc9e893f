"""Bad input gets a clear, typed error and leaves nothing half-written in OUTDIR."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from neofleet.compiler.errors import (
    BackendUnavailableError,
    CompileError,
    InputSpecError,
    ModelLoadError,
    UnknownTargetError,
)
from neofleet.compiler.ingest import source as source_module
from neofleet.compiler.inputs import parse_input_decl
from neofleet.compiler.pipeline import CompileRequest, compile_model
from tests.conftest import EXAMPLE_ONNX, EXAMPLE_PT2, make_mlp_onnx

pytestmark = pytest.mark.integration


def _request(model: Path, out: Path, *, framework: str = "onnx", targets: tuple[str, ...] =
             ("native",), inputs: tuple[str, ...] = ()) -> CompileRequest:
    return CompileRequest(model=model, framework=framework, targets=list(targets), output=out,
                          inputs=[parse_input_decl(i) for i in inputs], tuning_db=None)


def _fails(request: CompileRequest, error: type[CompileError], match: str) -> None:
    with pytest.raises(error, match=match):
        compile_model(request)
    assert not request.output.exists(), "nothing may be written on bad input"


def test_corrupt_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(EXAMPLE_ONNX.read_bytes()[:1000])
    _fails(_request(bad, tmp_path / "out"), ModelLoadError, "not a valid ONNX model")


def test_random_bytes_model(tmp_path: Path) -> None:
    bad = tmp_path / "noise.onnx"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    _fails(_request(bad, tmp_path / "out"), ModelLoadError, "corrupt.onnx|not a valid ONNX")


def test_missing_model_file(tmp_path: Path) -> None:
    _fails(_request(tmp_path / "nope.onnx", tmp_path / "out"), ModelLoadError, "does not exist")


def test_onnx_file_declared_as_pytorch(tmp_path: Path) -> None:
    _fails(_request(EXAMPLE_ONNX, tmp_path / "out", framework="pytorch"), ModelLoadError,
           "not a torch.export archive")


def test_pt2_declared_as_onnx(tmp_path: Path) -> None:
    _fails(_request(EXAMPLE_PT2, tmp_path / "out"), ModelLoadError, "not a valid ONNX model")


def test_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    import torch

    checkpoint = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(3)}, str(checkpoint))
    _fails(_request(checkpoint, tmp_path / "out", framework="pytorch"), ModelLoadError,
           "pickled checkpoints .* are refused")


def test_pt2_with_a_pickled_payload_is_refused_before_torch_reads_it(tmp_path: Path) -> None:
    """A .pt2 whose weight config asks for unpickling never reaches torch.load."""
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(EXAMPLE_PT2) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("_weights_config.json"):
                doc = json.loads(data)
                first = next(iter(doc["config"]))
                doc["config"][first]["use_pickle"] = True
                data = json.dumps(doc).encode()
            dst.writestr(item, data)
    _fails(_request(tampered, tmp_path / "out", framework="pytorch"), ModelLoadError,
           "is pickled; refused")


def test_undeclared_dynamic_input(tmp_path: Path) -> None:
    model = make_mlp_onnx(tmp_path / "dyn.onnx", batch="N")
    _fails(_request(model, tmp_path / "out"), InputSpecError,
           r"input x has dynamic dims \(x:\?x16:float32\); declare it, e.g. --input x:1x16")


@pytest.mark.parametrize(("decl", "match"), [
    ("image:1x3x64x64", r"contradicts the model, which expects image:1x3x32x32:float32"),
    ("img:1x3x32x32", r"the model has no input 'img'; it expects: image:1x3x32x32:float32"),
    ("image:1x3x32x32:int64", "the model expects dtype float32"),
])
def test_wrong_input_declaration(tmp_path: Path, decl: str, match: str) -> None:
    _fails(_request(EXAMPLE_ONNX, tmp_path / "out", inputs=(decl,)), InputSpecError, match)


def test_absurd_dims_in_the_model(tmp_path: Path) -> None:
    model = make_mlp_onnx(tmp_path / "huge.onnx", batch=100_000_000)
    _fails(_request(model, tmp_path / "out"), InputSpecError, "every dim must be between")


def test_external_data_escaping_the_model_folder(tmp_path: Path) -> None:
    import onnx

    folder = tmp_path / "m"
    folder.mkdir()
    model = onnx.load(str(make_mlp_onnx(folder / "mlp.onnx")))
    tensor = model.graph.initializer[0]
    (tmp_path / "secret.bin").write_bytes(tensor.raw_data or b"\0" * 512)
    tensor.ClearField("float_data")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    onnx.save(model, str(folder / "mlp.onnx"))
    _fails(_request(folder / "mlp.onnx", tmp_path / "out"), ModelLoadError,
           "must be a relative path inside the model's folder")


def test_unknown_target_before_anything_runs(tmp_path: Path) -> None:
    _fails(_request(EXAMPLE_ONNX, tmp_path / "out", targets=("native", "pdp11")),
           UnknownTargetError, "unknown target 'pdp11'")


def test_a_jetson_target_is_refused_with_the_reason(tmp_path: Path) -> None:
    """GPU presets build with tvm-cuda, but not Jetson ones (JetPack's CUDA is fixed) and
    not with TensorRT where it does not import: the target fails naming both, nothing is
    written."""
    request = _request(EXAMPLE_ONNX, tmp_path / "out", targets=("jetson-orin-nano",))
    (target,) = compile_model(request).targets
    assert target.bundle is None and isinstance(target.error, BackendUnavailableError)
    assert "TensorRT is not installed" in str(target.error)
    assert "JetPack" in str(target.error), str(target.error)
    assert not request.output.exists()


def test_failed_verification_leaves_no_bundle(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference that disagrees with every candidate: the target fails, OUTDIR stays empty."""
    import neofleet.compiler.pipeline as pipeline

    honest_load = pipeline.load_model

    def skewed_load(*args: object, **kwargs: object) -> source_module.SourceModel:
        source = honest_load(*args, **kwargs)  # type: ignore[arg-type]
        honest = source.reference
        source.reference = lambda feed: [o + 1.0 for o in honest(feed)]
        return source

    monkeypatch.setattr(pipeline, "load_model", skewed_load)
    result = compile_model(_request(EXAMPLE_ONNX, tmp_path / "out"))
    assert not result.ok
    error = result.targets[0].error
    assert error is not None and error.reason == "VerificationFailed"
    assert "no candidate passed verification" in str(error)
    assert "onnxruntime: output 0 differs" in str(error)
    assert not (tmp_path / "out" / "native").exists()
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert leftovers == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neofleet.cli", *args], capture_output=True,
                          text=True, check=False)


def test_cli_failure_is_one_line_and_nonzero(tmp_path: Path) -> None:
    done = _cli("compile", str(EXAMPLE_ONNX), "--framework", "onnx", "--target", "pdp11",
                "--output", str(tmp_path / "out"), "--json")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("neofleet: UnknownTarget: unknown target 'pdp11'")
    assert json.loads(done.stdout) == {"ok": False, "reason": "UnknownTarget",
                                       "message": json.loads(done.stdout)["message"]}
    assert not (tmp_path / "out").exists()


def test_cli_inspect_names_the_tampered_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    compile_model(_request(EXAMPLE_ONNX, out))
    bundle = out / "native"
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    meta = copy / "compiled.meta"
    meta.write_text(meta.read_text().replace('"TargetArch": "x86_64"', '"TargetArch": "x86_65"'))
    done = _cli("inspect", str(copy))
    assert done.returncode == 1
    assert "BundleIntegrity: compiled.meta: sha256" in done.stderr
    (copy / "extra.so").write_bytes(b"\x7fELF")
    meta.write_bytes((bundle / "compiled.meta").read_bytes())
    done = _cli("inspect", str(copy))
    assert "extra.so: present in the bundle but not in the manifest" in done.stderr
    assert _cli("inspect", str(bundle)).returncode == 0


def test_cli_reports_an_unexpected_error_as_internal(tmp_path: Path) -> None:
    """A bug still ends in JSON and one reason line (the compile pod's termination message)."""
    script = ("import sys, neofleet.compiler.pipeline as p\n"
              "def boom(request): raise KeyError('no such thing')\n"
              "p.compile_model = boom\n"
              "from neofleet.cli import main\n"
              "sys.argv = ['neofleet'] + sys.argv[1:]\n"
              "main()\n")
    done = subprocess.run([sys.executable, "-c", script, "compile", str(EXAMPLE_ONNX),
                           "--framework", "onnx", "--target", "native", "--output",
                           str(tmp_path / "out"), "--json"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert json.loads(done.stdout)["reason"] == "InternalError"
    assert done.stderr.strip().splitlines()[-1] == (
        "neofleet: InternalError: unexpected KeyError: 'no such thing'")
