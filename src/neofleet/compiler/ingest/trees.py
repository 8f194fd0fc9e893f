"""Tree ensembles (XGBoost, LightGBM, scikit-learn, Treelite) as a ``SourceModel``.

Pickles are refused before any library sees the file. The model is read by its own
library and by Treelite (``tree_formats``); the bundle's signature is one input
``data`` of shape ``[-1, num_feature]`` (any number of rows; float32 when the model's
thresholds are float32, as XGBoost's are, float64 otherwise, so the bundle compares
exactly what the source library compares) and outputs ``probabilities`` + ``label``
(classifiers) or ``predictions`` (regressors, rankers).

Verification samples are seeded and cover every split: each feature is drawn uniformly
around the range of its thresholds in the model (or rows are drawn from ``--sample-data``
when given), with some values missing (NaN) for libraries that handle missing values.
Sample ``i`` has 1, 64 or 1024 rows, so both of the runtime's paths are exercised.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.bundle.meta import TensorSpec
from neofleet.compiler.errors import InputSpecError, ModelLoadError, SampleDataError
from neofleet.compiler.ingest.source import SourceModel, file_sha256
from neofleet.compiler.ingest.tree_formats import LOADERS, LoadedTrees, preflight
from neofleet.compiler.inputs import InputDecl
from neofleet.runtime.backends.tree_outputs import TreeTask, task_outputs

SAMPLE_ROWS = (1, 64, 1024)
MISSING_FRACTION = 0.02
HOW_TO_SAVE = ("XGBoost: booster.save_model('model.json') (or .ubj); LightGBM: "
               "booster.save_model('model.txt'); scikit-learn: skops.io.dump(model, "
               "'model.skops'); Treelite: model.serialize('model.tl')")
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".sav", ".pck", ".p"}
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x78\x01", b"\x78\x5e", b"\x78\x9c",
               b"\x78\xda")


def refuse_pickle(path: Path) -> None:
    """Raise ModelLoadError for a pickle or joblib file, before anything parses it."""
    head = path.read_bytes()[:8]
    pickled = head[:1] == b"\x80" and head[1:2] in {bytes([p]) for p in range(2, 6)}
    if pickled or path.suffix.lower() in _PICKLE_SUFFIXES or head.startswith(_COMPRESSED):
        kind = "a Python pickle" if pickled else "a pickle/joblib file"
        raise ModelLoadError(f"{path.name} looks like {kind}: neofleet never unpickles user "
                             "files (loading a pickle runs arbitrary code). Save the model "
                             f"in a safe format instead: {HOW_TO_SAVE}")


def load_tree_model(path: Path, framework: str, decls: Sequence[InputDecl],
                    sample_data: Path | None = None) -> SourceModel:
    refuse_pickle(path)
    preflight(path, framework)
    loaded = LOADERS[framework](path)
    dump = json.loads(loaded.model.dump_as_json(pretty_print=False))
    tree = tree_description(dump, loaded)
    task = TreeTask.from_options(tree)
    spec = TensorSpec(name="data", shape=[-1, task.num_feature], dtype=tree["input_dtype"])
    _check_decls(decls, task.num_feature)
    rows = _sample_rows(sample_data, task.num_feature) if sample_data else None
    outputs = [TensorSpec(name=name, shape=shape, dtype=dtype) for name, shape, dtype in
               zip(task.output_names(), task.output_shapes(), _output_dtypes(task, tree),
                   strict=True)]
    ranges = _threshold_ranges(dump, task.num_feature)
    missing = MISSING_FRACTION if loaded.supports_missing else 0.0

    def sampler(seed: int) -> dict[str, np.ndarray]:
        return {"data": _sample(seed, ranges, rows, np.dtype(spec.dtype), missing)}

    return SourceModel(
        framework=framework, path=path, sha256=file_sha256(path), inputs=[spec],
        outputs=outputs, reference=lambda feed: _reference(loaded, task, feed["data"]),
        reference_name=f"{loaded.library} {loaded.library_version} predict",
        ops={"trees": len(dump["trees"])}, sampler=sampler, tree_model=loaded.model,
        tree=tree, sample_data=rows,
        source_library={"library": loaded.library, "library_version": loaded.library_version})


def tree_description(dump: dict[str, Any], loaded: LoadedTrees) -> dict[str, Any]:
    """What ``compiled.meta`` records and the runtime needs (``backend_options.tree``)."""
    kind, post = dump["task_type"], dump["postprocessor"]
    num_target, num_class = int(dump["num_target"]), max(int(c) for c in dump["num_class"])
    if (kind == "kBinaryClf" and post == "sigmoid" and num_class == 1) or (
            kind == "kMultiClf" and num_class == 2 and post == "identity_multiclass"):
        task = "binary"  # boosted (one sigmoid score) or a forest (two class columns)
    elif kind == "kMultiClf" and post in {"softmax", "identity_multiclass", "multiclass_ova"}:
        task = "multiclass"
    elif kind in {"kRegressor", "kLearningToRank", "kBinaryClf"} and num_class == 1:
        task = "regression"  # a binary model without a sigmoid gives raw scores
    else:
        raise ModelLoadError(f"unsupported tree model: task {kind} with postprocessor {post} "
                             f"and {num_class} classes")
    if task != "regression" and num_target != 1:
        raise ModelLoadError("multi-output classifiers are not supported")
    classes = loaded.classes or (list(range(2 if task == "binary" else num_class))
                                 if task != "regression" else None)
    return {"task": task, "num_tree": len(dump["trees"]), "num_feature": int(dump["num_feature"]),
            "num_target": num_target, "num_class": num_class, "classes": classes,
            "postprocessor": post, "sigmoid_alpha": float(dump.get("sigmoid_alpha", 1.0)),
            "ratio_c": float(dump.get("ratio_c", 1.0)),
            "base_scores": [float(b) for b in dump["base_scores"]],
            "average_tree_output": bool(dump["average_tree_output"]),
            "input_dtype": "float32" if dump["threshold_type"] == "float32" else "float64",
            "leaf_dtype": "float32" if dump["leaf_output_type"] == "float32" else "float64",
            "source_library": loaded.library, "source_library_version": loaded.library_version}


def _output_dtypes(task: TreeTask, tree: dict[str, Any]) -> list[str]:
    leaf = str(tree["leaf_dtype"])
    return [leaf] if task.task == "regression" else [leaf, "int64"]


def _check_decls(decls: Sequence[InputDecl], num_feature: int) -> None:
    for decl in decls:
        if decl.name != "data" or len(decl.shape) != 2 or decl.shape[1] != num_feature:
            raise InputSpecError(f"--input {decl}: a tree model takes one input, data, of "
                                 f"N rows x {num_feature} features (e.g. --input "
                                 f"data:1x{num_feature}; any number of rows is accepted)")


def _sample_rows(path: Path, num_feature: int) -> np.ndarray:
    """Typical rows: a .npy array, or an .npz whose one array is named after the input,
    ``data`` (its leading dimension is the samples, each a row of features)."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if archive.files != ["data"]:
                    raise SampleDataError(f"--sample-data {path.name}: a tree model has one "
                                          f"input, data (rows x {num_feature} features); the "
                                          f"file has {archive.files}")
                rows = archive["data"]
        else:
            rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SampleDataError(f"--sample-data {path.name}: not a readable .npy/.npz array "
                              f"({exc})") from exc
    if not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.shape[1] != num_feature \
            or rows.dtype.kind not in "fiu" or rows.shape[0] == 0:
        shape = list(getattr(rows, "shape", []))
        raise SampleDataError(f"--sample-data {path.name}: expected a 2-D numeric array of rows x "
                             f"{num_feature} features, got shape {shape}")
    return rows.astype(np.float64)


def _threshold_ranges(dump: dict[str, Any], num_feature: int) -> np.ndarray:
    """Per feature [low, high] around its split thresholds ([-2, 2] if never split)."""
    low, high = np.full(num_feature, np.inf), np.full(num_feature, -np.inf)
    for tree in dump["trees"]:
        for node in tree["nodes"]:
            if "threshold" in node:
                f, t = int(node["split_feature_id"]), float(node["threshold"])
                low[f], high[f] = min(low[f], t), max(high[f], t)
    unsplit = low > high
    low[unsplit], high[unsplit] = -2.0, 2.0
    pad = 0.1 * (high - low) + 0.5
    return np.stack([low - pad, high + pad], axis=1)


def _sample(seed: int, ranges: np.ndarray, rows: np.ndarray | None, dtype: np.dtype[Any],
            missing: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    count = SAMPLE_ROWS[seed % len(SAMPLE_ROWS)]
    if rows is not None:
        data = rows[rng.integers(0, rows.shape[0], count)]
    else:
        data = rng.uniform(ranges[:, 0], ranges[:, 1], size=(count, ranges.shape[0]))
    if missing:
        data = np.where(rng.random(data.shape) < missing, np.nan, data)
    return np.ascontiguousarray(data.astype(dtype))


def _reference(loaded: LoadedTrees, task: TreeTask, data: np.ndarray) -> list[np.ndarray]:
    """The source library's predictions in the bundle's output layout."""
    got = loaded.predict(data)
    values = np.asarray(got["values"])
    if values.ndim == 1:
        values = values.reshape(-1, 1)
    if task.task == "binary" and task.num_class == 1 and values.shape[1] == 2:
        values = values[:, 1:]  # scikit-learn gives [1 - p, p] for a one-score model
    outputs = task_outputs(values, task)
    if "label" in got:
        outputs[1] = np.asarray(got["label"], dtype=np.int64)
    return outputs
