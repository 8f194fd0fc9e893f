"""Representative inputs (pure): sample files are checked against the declared inputs,
and integer inputs get values the graph accepts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neofleet.bundle.meta import TensorSpec
from neofleet.compiler.errors import SampleDataError
from neofleet.compiler.ingest.int_values import integer_value_hints
from neofleet.compiler.ingest.samples import ValueHint, generated_inputs, load_sample_file
from tests.support.token_models import encoder_onnx, stateful_onnx

IDS = TensorSpec(name="input_ids", shape=[1, 16], dtype="int64")
SR = TensorSpec(name="sr", shape=[], dtype="int64")
X = TensorSpec(name="x", shape=[1, 4], dtype="float32")


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_a_sample_file_gives_one_dict_per_sample(tmp_path: Path) -> None:
    ids = np.arange(3 * 16, dtype=np.int64).reshape(3, 1, 16)
    srs = np.array([16000, 8000, 16000], np.int64)
    samples = load_sample_file(_npz(tmp_path / "s.npz", input_ids=ids, sr=srs), [IDS, SR])
    assert len(samples) == 3
    assert samples[1]["input_ids"].shape == (1, 16) and samples[1]["sr"].shape == ()
    assert int(samples[1]["sr"]) == 8000


@pytest.mark.parametrize(("arrays", "match"), [
    ({"input_ids": np.zeros((2, 1, 8), np.int64)}, r"input input_ids expects N samples of "
     r"1x16 int64 \(an array of shape \[N, 1, 16\]\), got shape \[2, 1, 8\] int64"),
    ({"input_ids": np.zeros((2, 1, 16), np.int32)}, r"expects .* int64 .* got .* int32"),
    ({"input_ids": np.zeros((1, 16), np.int64)}, r"input input_ids expects"),
    ({}, r"missing input\(s\) input_ids"),
    ({"input_ids": np.zeros((2, 1, 16), np.int64), "input_idz": np.zeros(1)},
     r"unknown array\(s\) input_idz"),
    ({"input_ids": np.zeros((0, 1, 16), np.int64)}, r"input input_ids expects"),
])
def test_samples_that_do_not_fit_are_refused_naming_the_input(
        tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    with pytest.raises(SampleDataError, match=match):
        load_sample_file(_npz(tmp_path / "s.npz", **arrays), [IDS])


def test_inputs_disagreeing_on_the_sample_count_are_refused(tmp_path: Path) -> None:
    path = _npz(tmp_path / "s.npz", input_ids=np.zeros((2, 1, 16), np.int64),
                sr=np.zeros(3, np.int64))
    with pytest.raises(SampleDataError, match="same number of samples"):
        load_sample_file(path, [IDS, SR])


def test_a_scalar_input_takes_a_vector_of_samples(tmp_path: Path) -> None:
    with pytest.raises(SampleDataError, match=r"input sr expects N samples of scalar int64 "
                       r"\(an array of shape \[N\]\)"):
        load_sample_file(_npz(tmp_path / "s.npz", sr=np.array(16000)), [SR])


@pytest.mark.parametrize("content", [b"not a zip", b"PK\x03\x04garbage"])
def test_unreadable_and_non_npz_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.npz"
    path.write_bytes(content)
    with pytest.raises(SampleDataError, match="not a readable .npz"):
        load_sample_file(path, [IDS])
    npy = tmp_path / "s.npy"
    np.save(npy, np.zeros((2, 1, 16), np.int64))
    with pytest.raises(SampleDataError, match="expected an .npz"):
        load_sample_file(npy, [IDS])


def test_pickled_arrays_are_never_loaded(tmp_path: Path) -> None:
    path = _npz(tmp_path / "s.npz", input_ids=np.array([{"a": 1}], dtype=object))
    with pytest.raises(SampleDataError, match="not a readable .npz"):
        load_sample_file(path, [IDS])


def test_token_inputs_are_bounded_by_the_tables_they_index(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(encoder_onnx(tmp_path / "e.onnx", vocab=50, types=2)))
    specs = [TensorSpec(name=n, shape=[1, 16], dtype="int64")
             for n in ("input_ids", "token_type_ids", "attention_mask")]
    hints = integer_value_hints(model, specs)
    assert (hints["input_ids"].low, hints["input_ids"].high) == (0, 50)
    assert (hints["token_type_ids"].low, hints["token_type_ids"].high) == (0, 2)
    assert (hints["attention_mask"].low, hints["attention_mask"].high) == (0, 2)
    for seed in range(20):
        feed = generated_inputs(specs, seed, hints)
        assert feed["input_ids"].max() < 50 and feed["token_type_ids"].max() < 2
        assert feed["input_ids"].dtype == np.int64


def test_an_input_compared_with_constants_takes_those_constants(tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(stateful_onnx(tmp_path / "s.onnx", rate=16000)))
    hints = integer_value_hints(model, [X, SR])
    assert set(hints) == {"sr"} and hints["sr"].choices == (16000,)
    assert int(generated_inputs([X, SR], 3, hints)["sr"]) == 16000


def test_value_hints_describe_themselves() -> None:
    assert ValueHint("x", 0, 50).describe() == "in [0, 50) (x)"
    assert ValueHint("y", choices=(8000, 16000)).describe() == "one of [8000, 16000] (y)"
