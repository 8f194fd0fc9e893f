"""Tree ensembles compiled by TL2cgen: one native library, two prediction paths.

The bundle's ``compiled.so`` (listed in the manifest as the artifact) holds

- ``neofleet_rows_predict``: TL2cgen's generated if/else code, row by row: fastest for a
  few rows;
- ``neofleet_forest_predict_f32/_f64``: the blocked forest kernel over the node table
  in the bundle's ``forest.npz`` (also listed in the manifest): fastest for batches,
  and split across threads.

Which path runs is decided per call from the number of rows: fewer than
``crossover_rows`` (measured on the compile host and recorded in ``compiled.meta``) take
the rows path. ``variant`` forces one path (the compiler verifies each). Both produce
margins; ``tree_outputs`` turns them into probabilities/labels or predictions. Only
ctypes and numpy are needed: no treelite, tl2cgen or source library on the device.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.runtime.backends.tree_outputs import TreeTask, postprocess, task_outputs
from neofleet.runtime.errors import IncompatibleBundleError

VARIANTS = ("rows", "forest")
ROWS_PER_THREAD = 128
_P = ctypes.c_void_p
# one node of the forest kernel's table (neofleet_node_f32/_f64 in forest_kernel.c), in
# the precision of the model's inputs
NODE_DTYPES = {
    "float32": np.dtype([("threshold", "<f4"), ("feature", "<u4"), ("left", "<i4"),
                         ("leaf", "<i4")]),
    "float64": np.dtype([("threshold", "<f8"), ("feature", "<u4"), ("left", "<i4"),
                         ("leaf", "<i4"), ("pad", "<i4")]),
}
_FOREST_DTYPES = {
    "roots": np.dtype("<i4"), "depths": np.dtype("<i4"), "leaf_values": np.dtype("<f8"),
    "out_offset": np.dtype("<i4"), "out_width": np.dtype("<i4"), "tree_count": np.dtype("<i4"),
}
_FEATURE = 0x7FFFFFFF


class TreeBackend:
    def __init__(self, library: Path, forest: Path | None, options: dict[str, Any], *,
                 num_threads: int | None, variant: str | None) -> None:
        tree = dict(options.get("tree") or {})
        self._task = TreeTask.from_options(tree)
        self._input_dtype = np.dtype(str(tree.get("input_dtype", "float32")))
        self._leaf_dtype = np.dtype(str(tree.get("leaf_dtype", "float32")))
        self._base_scores = np.asarray(tree.get("base_scores", [0.0] * self._task.width),
                                       dtype=np.float64)
        self._average = bool(tree.get("average_tree_output", False))
        if variant not in (None, *VARIANTS):
            raise IncompatibleBundleError(f"unknown tree variant {variant!r}; use "
                                          f"{' or '.join(VARIANTS)}")
        self._lib = _load_library(library)
        self._forest = (_load_forest(forest, self._task, self._input_dtype)
                        if forest is not None else None)
        if variant == "forest" and self._forest is None:
            raise IncompatibleBundleError("this bundle has no forest path: "
                                          f"{options.get('forest_unsupported', 'not built')}")
        self._variant = variant
        self._kernel = self._bind_kernel()
        crossover = options.get("crossover_rows")  # None: the rows path for every batch
        self._crossover = int(crossover) if crossover is not None else 1 << 62
        self._threads = max(1, num_threads or len(os.sched_getaffinity(0)))
        self._pool = ThreadPoolExecutor(self._threads) if self._threads > 1 else None

    def _bind_kernel(self) -> tuple[Any, tuple[int, ...]]:
        """The forest kernel for the input dtype and the table's pointers, resolved once."""
        if self._forest is None:
            return None, ()
        f = self._forest
        kernel = (self._lib.neofleet_forest_predict_f64 if self._input_dtype == np.float64
                  else self._lib.neofleet_forest_predict_f32)
        return kernel, (f["nodes"].ctypes.data, f["roots"].ctypes.data, f["depths"].ctypes.data,
                        len(f["roots"]), f["leaf_values"].ctypes.data,
                        f["out_offset"].ctypes.data, f["out_width"].ctypes.data)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        data = np.ascontiguousarray(inputs[0], dtype=self._input_dtype)
        if data.ndim != 2 or data.shape[1] != self._task.num_feature:
            raise IncompatibleBundleError(f"expected rows x {self._task.num_feature} features")
        margin = self._margin(data)
        return task_outputs(postprocess(margin, self._task), self._task)

    def _margin(self, data: np.ndarray) -> np.ndarray:
        rows = data.shape[0]
        use_forest = self._forest is not None and (
            self._variant == "forest" or (self._variant is None and rows >= self._crossover))
        if not use_forest:
            out = np.zeros((rows, self._task.width), dtype=self._leaf_dtype)
            self._lib.neofleet_rows_predict(data.ctypes.data, rows, data.shape[1],
                                            out.ctypes.data)
            return out
        total = np.zeros((rows, self._task.width), dtype=np.float64)
        self._forest_chunks(data, total)
        if self._average:
            assert self._forest is not None
            total /= np.maximum(self._forest["tree_count"], 1)
        total += self._base_scores
        return total.astype(self._leaf_dtype)

    def _forest_chunks(self, data: np.ndarray, out: np.ndarray) -> None:
        rows = data.shape[0]
        chunks = min(self._threads, rows // ROWS_PER_THREAD)
        if self._pool is None or chunks <= 1:
            self._forest_call(data, out, 0, rows)
            return
        step = -(-rows // chunks)
        parts = [(a, min(a + step, rows)) for a in range(0, rows, step)]
        futures = [self._pool.submit(self._forest_call, data, out, a, b) for a, b in parts[1:]]
        self._forest_call(data, out, *parts[0])
        for future in futures:
            future.result()

    def _forest_call(self, data: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
        """One kernel call on rows [start, stop) (ctypes releases the GIL meanwhile)."""
        kernel, table = self._kernel
        row_bytes, out_row_bytes = data.strides[0], out.strides[0]
        kernel(*table, data.ctypes.data + start * row_bytes, stop - start, data.shape[1],
               out.shape[1], out.ctypes.data + start * out_row_bytes)


def _load_library(path: Path) -> Any:
    try:
        lib = ctypes.CDLL(str(path))
        rows = lib.neofleet_rows_predict
        forest32, forest64 = lib.neofleet_forest_predict_f32, lib.neofleet_forest_predict_f64
    except (OSError, AttributeError) as exc:
        raise IncompatibleBundleError(f"cannot load the tree library {path.name}: {exc}") from exc
    rows.argtypes = [_P, ctypes.c_int64, ctypes.c_int32, _P]
    rows.restype = None
    for kernel in (forest32, forest64):
        kernel.argtypes = [_P, _P, _P, ctypes.c_int32, _P, _P, _P, _P, ctypes.c_int64,
                           ctypes.c_int32, ctypes.c_int32, _P]
        kernel.restype = None
    return lib


def _load_forest(path: Path, task: TreeTask, input_dtype: np.dtype[Any]) -> dict[str, np.ndarray]:
    """Read the node table and check every index in it: the kernel does not."""
    expected = {"nodes": NODE_DTYPES.get(input_dtype.name), **_FOREST_DTYPES}
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: np.ascontiguousarray(data[name]) for name in expected}
    except (OSError, KeyError, ValueError) as exc:
        raise IncompatibleBundleError(f"cannot read the forest table {path.name}: {exc}") from exc
    for name, dtype in expected.items():
        if arrays[name].dtype != dtype or arrays[name].ndim != 1:
            raise IncompatibleBundleError(f"forest table {name}: unexpected dtype/shape")
    check_forest(arrays, task)
    return arrays


def check_forest(arrays: dict[str, np.ndarray], task: TreeTask) -> None:
    """Every node, child, feature, leaf and output index within bounds (pure)."""
    problems = _shape_problems(arrays, task)
    if not problems:
        problems = _index_problems(arrays, task)
    if problems:
        raise IncompatibleBundleError(f"the forest table is inconsistent: {'; '.join(problems)}")


def _shape_problems(arrays: dict[str, np.ndarray], task: TreeTask) -> list[str]:
    nodes, roots = arrays["nodes"], arrays["roots"]
    ntree = len(roots)
    if ntree == 0 or len(arrays["depths"]) != ntree or len(arrays["out_width"]) != ntree \
            or len(arrays["out_offset"]) != ntree or len(arrays["tree_count"]) != task.width:
        return ["array lengths disagree"]
    if roots[0] != 0 or np.any(np.diff(roots) <= 0) or roots[-1] >= len(nodes):
        return ["tree roots out of order or out of range"]
    return []


def _index_problems(arrays: dict[str, np.ndarray], task: TreeTask) -> list[str]:
    nodes, roots = arrays["nodes"], arrays["roots"]
    n = len(nodes)
    # int64 throughout: sums of int32 indices near 2**31 would wrap and pass the bounds.
    widths = arrays["out_width"].astype(np.int64)
    offsets = arrays["out_offset"].astype(np.int64)
    tree_of = np.searchsorted(roots, np.arange(n), side="right") - 1
    lo, hi = roots[tree_of], np.append(roots[1:], n)[tree_of]
    left, me = nodes["left"].astype(np.int64), np.arange(n)
    leaf = (left == me) & np.isnan(nodes["threshold"]) & (nodes["feature"] == 0)
    problems = []
    if np.any(~leaf & ((left <= me) | (left + 1 >= hi))) or np.any(left < lo):
        problems.append("a child outside its tree")
    if np.any((nodes["feature"] & _FEATURE) >= task.num_feature):
        problems.append("a feature index out of range")
    leaf_index = nodes["leaf"].astype(np.int64)
    if np.any((leaf_index < 0)
              | (leaf_index + widths[tree_of] > len(arrays["leaf_values"]))):
        problems.append("a leaf index out of range")
    if np.any((offsets < 0) | (widths < 1) | (offsets + widths > task.width)):
        problems.append("an output column out of range")
    if np.any((arrays["depths"] < 0) | (arrays["depths"] > n)):
        problems.append("a tree depth out of range")
    return problems
