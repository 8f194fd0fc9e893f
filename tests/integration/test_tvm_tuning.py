"""MetaSchedule tuning with a kept, reused database (neofleet.compiler.backends.tvm_tuning).

Small on purpose (2 CI cores): one 32-trial tuning of a two-layer MLP, one 16-trial tuning
of a single new layer shape, the rest reuse. Assertions are on counts and numerics, never
on timings.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

tvm = pytest.importorskip("tvm")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from neofleet.compiler.backends.tvm_tuning import (  # noqa: E402
    TuningReport,
    tune_relax_module,
    tuning_database_dir,
)

BATCH = 16
MODEL_A = (256, 256, 64)  # layers 16x256x256 and 16x256x64
MODEL_B = (256, 256, 32)  # shares 16x256x256 (the first layer) with A, adds 16x256x32


def host_mcpu() -> str:
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    if "avx512f" in flags:
        return "skylake-avx512"
    if "avx2" in flags:
        return "haswell"
    return "x86-64"


TARGET_JSON: dict[str, Any] = {"kind": "llvm", "mcpu": host_mcpu(), "num-cores": 2}


def mlp(dims: tuple[int, ...], seed: int) -> Any:
    """MatMul+Add+Relu per layer, batch 16, seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(dims)):
        w = rng.standard_normal((n_in, n_out)).astype(np.float32) / np.sqrt(n_in)
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), f"b{i}")]
        out = "y" if i == len(dims) - 2 else f"h{i}"
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [out])]
        x = out
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, dims[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@dataclass
class Tuned:
    mod: Any
    report: TuningReport
    messages: list[str]


def tune(dims: tuple[int, ...], root: Path, trials: int, seed: int = 0) -> tuple[Any, Tuned]:
    from tvm.relax.frontend.onnx import from_onnx

    model = mlp(dims, seed)
    mod = from_onnx(model, shape_dict={"x": [BATCH, dims[0]]}, keep_params_in_input=False)
    messages: list[str] = []
    tuned, report = tune_relax_module(mod, tvm.target.Target(TARGET_JSON), database_root=root,
                                      trials=trials, progress=messages.append)
    return model, Tuned(tuned, report, messages)


def assert_matches_onnxruntime(model: Any, mod: Any) -> None:
    from tvm import relax

    target = tvm.target.Target(TARGET_JSON)
    ex = tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.random.default_rng(1).standard_normal((BATCH, 256)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, session.run(None, {"x": x})[0], atol=1e-4, rtol=1e-4)


def scheduled_functions(mod: Any) -> int:
    return sum(1 for f in mod.functions.values()
               if f.attrs is not None and f.attrs.get("tirx.is_scheduled", False))


@pytest.fixture(scope="module")
def database_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tuning-db")


@pytest.fixture(scope="module")
def first(database_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Model A tuned with 32 trials into an empty database, run from an empty cwd."""
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        model, result = tune(MODEL_A, database_root, trials=32)
        assert list(cwd.iterdir()) == [], "tuning left files in the working directory"
    yield model, result


def test_first_tuning_tunes_and_matches_onnxruntime(first: Any, database_root: Path) -> None:
    model, result = first
    report = result.report
    assert report.tasks == 2
    assert report.reused_tasks == 0
    assert report.tuned_tasks > 0
    assert 0 < report.trials <= 32
    assert scheduled_functions(result.mod) == report.tuned_tasks
    db_dir = Path(report.database_dir)
    assert db_dir == tuning_database_dir(database_root, TARGET_JSON)
    assert (db_dir / "database_tuning_record.json").stat().st_size > 0
    assert (db_dir / "logs" / "tuning.log").stat().st_size > 0
    assert json.loads((db_dir / "target.json").read_text()) == TARGET_JSON
    assert any("trials" in m for m in result.messages)
    assert_matches_onnxruntime(model, result.mod)


def test_second_compile_reuses_everything(first: Any, database_root: Path) -> None:
    _, before = first
    model, again = tune(MODEL_A, database_root, trials=32)
    report = again.report
    assert report.database_dir == before.report.database_dir
    assert report.tasks == before.report.tasks
    assert report.reused_tasks == report.tasks
    assert report.tuned_tasks == 0
    assert report.trials == 0
    assert scheduled_functions(again.mod) == report.tasks
    assert_matches_onnxruntime(model, again.mod)


def test_new_model_reuses_shared_layer_and_tunes_the_new_one(first: Any,
                                                             database_root: Path) -> None:
    model, result = tune(MODEL_B, database_root, trials=16, seed=7)
    report = result.report
    assert report.tasks == 2
    assert report.reused_tasks >= 1
    assert report.tuned_tasks >= 1
    assert 0 < report.trials <= 16
    assert_matches_onnxruntime(model, result.mod)


def test_zero_trials_on_empty_database_builds_untuned(tmp_path: Path) -> None:
    model, result = tune(MODEL_A, tmp_path, trials=0)
    report = result.report
    assert (report.reused_tasks, report.tuned_tasks, report.trials) == (0, 0, 0)
    assert report.tasks == 2
    assert scheduled_functions(result.mod) == 0
    assert_matches_onnxruntime(model, result.mod)


def test_corrupt_database_is_moved_aside(tmp_path: Path) -> None:
    db_dir = tuning_database_dir(tmp_path, TARGET_JSON)
    db_dir.mkdir(parents=True)
    (db_dir / "database_workload.json").write_text('["truncated", \n')
    (db_dir / "database_tuning_record.json").write_text("[0, [[]]]\n")
    model, result = tune(MODEL_A, tmp_path, trials=0)
    assert result.report.trials == 0
    assert any("unreadable database" in m for m in result.messages)
    moved = list(db_dir.glob("corrupt-*/database_workload.json"))
    assert len(moved) == 1 and moved[0].read_text().startswith('["truncated"')
    assert_matches_onnxruntime(model, result.mod)


def test_database_dir_is_keyed_by_target(tmp_path: Path) -> None:
    base = tuning_database_dir(tmp_path, TARGET_JSON)
    assert base.parent == tmp_path
    assert base.name.startswith(f"llvm-{TARGET_JSON['mcpu']}-")
    export = dict(tvm.target.Target(TARGET_JSON).export())
    assert tuning_database_dir(tmp_path, export) == base
    reordered = dict(reversed(list(TARGET_JSON.items())))
    assert tuning_database_dir(tmp_path, reordered) == base
    for change in ({"num-cores": 4}, {"mcpu": "x86-64"}, {"mattr": ["+avx2"]}):
        assert tuning_database_dir(tmp_path, {**TARGET_JSON, **change}) != base
    assert os.sep not in base.name
