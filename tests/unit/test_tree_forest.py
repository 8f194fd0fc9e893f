"""Tree models, the pure parts: the forest kernel's node table, its runtime check, the task
outputs, the crossover choice, pickle refusal, exact labels and any-rows serving."""

from __future__ import annotations

import bz2
import gzip
import lzma
import operator
import pickle
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neofleet.compiler.backends.forest import ForestUnsupported, forest_arrays
from neofleet.compiler.errors import ModelLoadError
from neofleet.compiler.ingest.trees import refuse_pickle
from neofleet.compiler.select import crossover_rows
from neofleet.compiler.verify import Tolerance, compare_outputs
from neofleet.runtime.backends.tree_outputs import TreeTask, postprocess, task_outputs
from neofleet.runtime.backends.trees import NODE_DTYPES, check_forest
from neofleet.runtime.errors import IncompatibleBundleError, InputError, ServerConfigError
from neofleet.runtime.server.batching import ANY_ROWS, compiled_batch, pack
from neofleet.runtime.server.protocol import _check_shape
from neofleet.runtime.server.signature import TensorMeta, signature_of

Arrays = dict[str, np.ndarray]
F32 = "float32"
F64 = "float64"
MISSING = 1 << 31  # the missing bit of `feature`
FEATURE = 0x7FFFFFFF
INT32_MAX = int(np.iinfo(np.int32).max)

# ---------------------------------------------------------------------------- dumps


def split(node_id: int, feature: int, op: str, threshold: float, left: int, right: int, *,
          default_left: bool) -> dict[str, Any]:
    return {"node_id": node_id, "split_feature_id": feature, "default_left": default_left,
            "node_type": "numerical_test_node", "comparison_op": op, "threshold": threshold,
            "left_child": left, "right_child": right}


def leaf(node_id: int, value: float | list[float]) -> dict[str, Any]:
    return {"node_id": node_id, "leaf_value": value}


def dump(trees: list[list[dict[str, Any]]], *, num_class: int = 1, num_target: int = 1,
         target_id: list[int] | None = None, class_id: list[int] | None = None,
         leaf_vector_shape: list[int] | None = None) -> dict[str, Any]:
    return {"num_class": [num_class] * num_target, "num_target": num_target,
            "target_id": target_id if target_id is not None else [0] * len(trees),
            "class_id": class_id if class_id is not None else [0] * len(trees),
            "leaf_vector_shape": leaf_vector_shape or [1, 1],
            "trees": [{"nodes": nodes} for nodes in trees]}


# tree A: x0 < 0.5 (NaN left) ? 1 : (x1 <= 2 (NaN right) ? 2 : 3)
TREE_A = [split(0, 0, "<", 0.5, 1, 2, default_left=True), leaf(1, 1.0),
          split(2, 1, "<=", 2.0, 3, 4, default_left=False), leaf(3, 2.0), leaf(4, 3.0)]
# tree B: x1 > 1 (NaN left) ? 10 : (x0 >= 3 (NaN right) ? 20 : 30)
TREE_B = [split(0, 1, ">", 1.0, 1, 2, default_left=True), leaf(1, 10.0),
          split(2, 0, ">=", 3.0, 3, 4, default_left=False), leaf(3, 20.0), leaf(4, 30.0)]
TWO_TREES = dump([TREE_A, TREE_B])
REGRESSION = TreeTask(task="regression", num_feature=2, num_target=1, num_class=1,
                      postprocessor="identity")


def stump(left: float | list[float], right: float | list[float]) -> list[dict[str, Any]]:
    """x0 < 0 (NaN left) ? left : right"""
    return [split(0, 0, "<", 0.0, 1, 2, default_left=True), leaf(1, left), leaf(2, right)]


def traverse(arrays: Arrays, rows: np.ndarray) -> np.ndarray:
    """A reference walk of the node table, as forest_kernel.c walks it (sum over trees)."""
    width = len(arrays["tree_count"])
    data = np.asarray(rows, dtype=arrays["nodes"].dtype["threshold"])  # the input's precision
    out = np.zeros((data.shape[0], width))
    for r, row in enumerate(data):
        for t in range(len(arrays["roots"])):
            start = int(arrays["nodes"][walk(arrays, t, row)]["leaf"])
            w, offset = int(arrays["out_width"][t]), int(arrays["out_offset"][t])
            out[r, offset:offset + w] += arrays["leaf_values"][start:start + w]
    return out


def walk(arrays: Arrays, t: int, row: np.ndarray) -> int:
    """The node one row ends on in tree t: exactly ``depths[t]`` steps from its root, each to
    ``left + 1`` (slot1) when x >= threshold or x is NaN and the missing bit is set, else
    to ``left`` (slot0)."""
    nodes, idx = arrays["nodes"], int(arrays["roots"][t])
    for _ in range(int(arrays["depths"][t])):
        node = nodes[idx]
        feature = int(node["feature"])
        x = row[feature & FEATURE]
        slot1 = bool(x >= node["threshold"]) or (bool(np.isnan(x)) and feature >> 31 == 1)
        idx = int(node["left"]) + int(slot1)
    return idx


def is_leaf(arrays: Arrays, index: int) -> bool:
    node = arrays["nodes"][index]
    return (int(node["left"]) == index and bool(np.isnan(node["threshold"]))
            and int(node["feature"]) == 0)


OPS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def evaluate(forest: dict[str, Any], rows: np.ndarray, dtype: str) -> np.ndarray:
    """What the dump itself means (scalar leaves, one output), compared in ``dtype``: NaN
    goes to the default child, otherwise the left child when ``x op threshold`` holds."""
    real = np.dtype(dtype).type
    out = np.zeros(len(rows))
    for r, row in enumerate(np.asarray(rows, dtype=dtype)):
        for tree in forest["trees"]:
            by_id = {int(n["node_id"]): n for n in tree["nodes"]}
            node = by_id[0]
            while "leaf_value" not in node:
                x = row[node["split_feature_id"]]
                if np.isnan(x):
                    go_left = node["default_left"]
                else:
                    go_left = OPS[node["comparison_op"]](x, real(node["threshold"]))
                node = by_id[node["left_child"] if go_left else node["right_child"]]
            out[r] += node["leaf_value"]
    return out


def up(value: float, dtype: str) -> float:
    """The next representable value above ``value`` in ``dtype``."""
    real = np.dtype(dtype).type
    return float(np.nextafter(real(value), real(np.inf)))


def down(value: float, dtype: str) -> float:
    real = np.dtype(dtype).type
    return float(np.nextafter(real(value), real(-np.inf)))


# ---------------------------------------------------------------------------- forest_arrays


def test_forest_arrays_numbers_nodes_globally_with_roots_and_depths() -> None:
    arrays = forest_arrays(TWO_TREES, F64)
    assert len(arrays["nodes"]) == 10
    np.testing.assert_array_equal(arrays["roots"], [0, 5])
    np.testing.assert_array_equal(arrays["depths"], [2, 2])
    # breadth-first, slot0 first: tree B's root (">") has its false child (the split) in slot0
    np.testing.assert_array_equal(arrays["leaf_values"], [1, 2, 3, 10, 30, 20])
    np.testing.assert_array_equal(arrays["out_offset"], [0, 0])
    np.testing.assert_array_equal(arrays["out_width"], [1, 1])
    np.testing.assert_array_equal(arrays["tree_count"], [2])


@pytest.mark.parametrize(("dtype", "itemsize"), [(F32, 16), (F64, 24)])
def test_forest_arrays_node_table_is_the_kernel_struct_of_the_input_dtype(dtype: str,
                                                                         itemsize: int) -> None:
    nodes = forest_arrays(TWO_TREES, dtype)["nodes"]
    assert nodes.dtype == NODE_DTYPES[dtype] and nodes.dtype.itemsize == itemsize
    assert nodes.dtype["threshold"] == np.dtype(dtype)
    assert nodes.dtype.names is not None
    assert nodes.dtype.names[:4] == ("threshold", "feature", "left", "leaf")
    assert not {"right", "missing", "eq_left"} & set(nodes.dtype.names)


def _table(arrays: Arrays) -> list[tuple[int, int, int]]:
    nodes = arrays["nodes"]
    return list(zip(nodes["feature"].tolist(), nodes["left"].tolist(), nodes["leaf"].tolist(),
                    strict=True))


@pytest.mark.parametrize("dtype", [F64, F32])
def test_forest_arrays_rewrites_both_trees_to_the_kernel_rule(dtype: str) -> None:
    arrays = forest_arrays(TWO_TREES, dtype)
    nan = float("nan")
    np.testing.assert_array_equal(
        arrays["nodes"]["threshold"],
        np.array([0.5, nan, up(2.0, dtype), nan, nan, up(1.0, dtype), 3.0, nan, nan, nan],
                 dtype=dtype))
    assert _table(arrays) == [
        (0, 1, 0),            # 0: x0 < 0.5: slot0 = true child (leaf 1), default left: no bit
        (0, 1, 0),            # 1: leaf 1.0
        (1 | MISSING, 3, 0),  # 2: x1 <= 2: slot0 = true child, default right is slot1: bit
        (0, 3, 1),            # 3: leaf 2.0
        (0, 4, 2),            # 4: leaf 3.0
        (1 | MISSING, 6, 0),  # 5: x1 > 1: slot0 = false child (split), default left = slot1
        (0, 8, 0),            # 6: x0 >= 3: slot0 = false child (30), default right = slot0
        (0, 7, 3),            # 7: leaf 10.0
        (0, 8, 4),            # 8: leaf 30.0
        (0, 9, 5),            # 9: leaf 20.0
    ]


def test_forest_arrays_float32_thresholds_step_up_in_float32() -> None:
    thresholds = forest_arrays(TWO_TREES, F32)["nodes"]["threshold"]
    assert thresholds.dtype == np.float32
    two = np.float32(2.0)
    assert thresholds[2] == np.nextafter(two, np.float32(np.inf)) > two
    # the float64 step above 2 is 2 again in float32: a "<=" rewritten in double would send
    # x1 == 2 the wrong way
    assert np.float32(np.nextafter(2.0, np.inf)) == two
    assert thresholds[2] != np.float32(np.nextafter(2.0, np.inf))
    assert float(thresholds[2]) == 2.0 + 2.0 ** -22
    assert float(forest_arrays(TWO_TREES, F64)["nodes"]["threshold"][2]) == 2.0 + 2.0 ** -51


def test_forest_arrays_float32_steps_up_from_the_float32_threshold() -> None:
    tenth = float(np.float32(0.1))  # the model's float32 threshold, as its dump writes it
    forest = dump([[split(0, 0, "<=", tenth, 1, 2, default_left=True), leaf(1, 1.0),
                    leaf(2, 2.0)]])
    threshold = forest_arrays(forest, F32)["nodes"]["threshold"][0]
    assert threshold == np.nextafter(np.float32(0.1), np.float32(np.inf))
    rows = np.array([[tenth], [up(tenth, F32)]], dtype=np.float32)
    np.testing.assert_array_equal(traverse(forest_arrays(forest, F32), rows)[:, 0], [1.0, 2.0])


# a split "x0 op 1" whose true (left) child is leaf 1.0 and false (right) child leaf 2.0:
# the two slots' leaf values, whether the threshold steps up, and the prediction for
# x0 = 0.5, 1 (exactly the threshold), 1.5 and NaN (the default child)
@pytest.mark.parametrize(("op", "slots", "stepped", "predictions"), [
    ("<", (1.0, 2.0), False, [1.0, 2.0, 2.0]),
    ("<=", (1.0, 2.0), True, [1.0, 1.0, 2.0]),
    (">", (2.0, 1.0), True, [2.0, 2.0, 1.0]),
    (">=", (2.0, 1.0), False, [2.0, 1.0, 1.0]),
])
@pytest.mark.parametrize("default_left", [True, False])
@pytest.mark.parametrize("dtype", [F64, F32])
def test_forest_arrays_each_operator_slot_order_threshold_and_missing_bit(
        op: str, slots: tuple[float, float], stepped: bool, predictions: list[float],
        default_left: bool, dtype: str) -> None:
    forest = dump([[split(0, 0, op, 1.0, 1, 2, default_left=default_left), leaf(1, 1.0),
                    leaf(2, 2.0)]])
    arrays = forest_arrays(forest, dtype)
    root = arrays["nodes"][0]
    assert root["threshold"] == (up(1.0, dtype) if stepped else 1.0)
    assert int(root["left"]) == 1
    values = arrays["leaf_values"]
    assert (values[arrays["nodes"][1]["leaf"]], values[arrays["nodes"][2]["leaf"]]) == slots
    default = 1.0 if default_left else 2.0
    assert bool(int(root["feature"]) & MISSING) == (slots[1] == default)
    assert int(root["feature"]) & FEATURE == 0
    rows = np.array([[0.5], [1.0], [1.5], [np.nan]], dtype=dtype)
    np.testing.assert_array_equal(traverse(arrays, rows)[:, 0], [*predictions, default])
    np.testing.assert_array_equal(evaluate(forest, rows, dtype), [*predictions, default])


def test_forest_arrays_lays_each_tree_out_breadth_first_with_adjacent_children() -> None:
    # ids deliberately not breadth-first: root 0 -> (4, 1); 4 -> (leaf 5, 2); 1 -> (leaf 6,
    # leaf 7); 2 -> (leaf 8, leaf 3); all "<", so slot0 is the left child
    deep = [split(0, 0, "<", 0.0, 4, 1, default_left=True),
            split(1, 0, "<", 5.0, 6, 7, default_left=True),
            split(2, 0, "<", -5.0, 8, 3, default_left=True),
            leaf(3, 3.0), split(4, 1, "<", 1.0, 5, 2, default_left=True),
            leaf(5, 5.0), leaf(6, 6.0), leaf(7, 7.0), leaf(8, 8.0)]
    arrays = forest_arrays(dump([deep, stump(-1.0, -2.0)]), F64)
    np.testing.assert_array_equal(arrays["roots"], [0, 9])
    np.testing.assert_array_equal(arrays["depths"], [3, 1])  # each tree's own max depth
    # root; its children (ids 4, 1); their children (5, 2 | 6, 7); 2's children (8, 3)
    assert arrays["nodes"]["left"].tolist() == [1, 3, 5, 3, 7, 5, 6, 7, 8, 10, 10, 11]
    leaves = [i for i in range(len(arrays["nodes"])) if is_leaf(arrays, i)]
    assert leaves == [3, 5, 6, 7, 8, 10, 11]
    values = arrays["leaf_values"][arrays["nodes"]["leaf"][leaves]]
    np.testing.assert_array_equal(values, [5.0, 6.0, 7.0, 8.0, 3.0, -1.0, -2.0])
    rows = np.array([[-1.0, 0.5], [-1.0, 2.0], [-6.0, 2.0], [2.0, 0.0], [6.0, 0.0]])
    np.testing.assert_array_equal(traverse(arrays, rows)[:, 0],
                                  [5.0 - 1, 3.0 - 1, 8.0 - 1, 6.0 - 2, 7.0 - 2])


@pytest.mark.parametrize("dtype", [F64, F32])
def test_forest_arrays_leaves_loop_to_themselves(dtype: str) -> None:
    arrays = forest_arrays(TWO_TREES, dtype)
    nodes = arrays["nodes"]
    for index, value_index in ((1, 0), (3, 1), (4, 2), (7, 3), (8, 4), (9, 5)):
        node = nodes[index]
        assert is_leaf(arrays, index)
        assert np.isnan(node["threshold"]) and node["feature"] == 0 and node["left"] == index
        assert node["leaf"] == value_index
    for index in (0, 2, 5, 6):
        assert not is_leaf(arrays, index) and nodes[index]["left"] > index


def test_forest_arrays_follow_node_ids_not_list_order() -> None:
    shuffled = [TREE_A[4], TREE_A[2], TREE_A[0], TREE_A[3], TREE_A[1]]
    a, b = forest_arrays(dump([shuffled]), F64), forest_arrays(dump([TREE_A]), F64)
    rows = np.array([[0.0, 0.0], [1.0, 2.0], [1.0, 3.0], [np.nan, np.nan]])
    np.testing.assert_array_equal(traverse(a, rows), traverse(b, rows))
    for field in ("threshold", "feature", "left", "leaf"):
        np.testing.assert_array_equal(a["nodes"][field], b["nodes"][field])
    assert a["nodes"][2]["left"] == 3 and a["depths"][0] == 2


@pytest.mark.parametrize("dtype", [F64, F32])
def test_forest_arrays_walk_gives_hand_computed_predictions_including_nan(dtype: str) -> None:
    # A: x0 < 0.5 (NaN left) ? 1 : (x1 <= 2 (NaN right) ? 2 : 3)
    # B: x1 > 1 (NaN left) ? 10 : (x0 >= 3 (NaN right) ? 20 : 30)
    nan, inf = np.nan, np.inf
    cases = [
        ([0.5, 2.0], 2 + 10),                                  # both at "<" and "<=" thresholds
        ([down(0.5, dtype), up(2.0, dtype)], 1 + 10),          # just inside / just past
        ([0.5, up(2.0, dtype)], 3 + 10),
        ([0.5, 1.0], 2 + 30),                                  # at ">": false
        ([0.5, up(1.0, dtype)], 2 + 10),                       # just past ">": true
        ([3.0, 1.0], 2 + 20),                                  # at ">=": true
        ([down(3.0, dtype), 1.0], 2 + 30),                     # just below ">=": false
        ([3.0, down(1.0, dtype)], 2 + 20),
        ([0.0, 2.0], 1 + 10), ([1.0, 2.5], 3 + 10), ([2.0, 0.0], 2 + 30),
        ([nan, 2.0], 1 + 10),                                  # NaN to A's default (left)
        ([0.5, nan], 3 + 10),                                  # NaN to A's right, B's left
        ([nan, 1.0], 1 + 30),                                  # NaN to B's inner default (right)
        ([nan, nan], 1 + 10),
        ([inf, -inf], 2 + 20), ([-inf, inf], 1 + 10),
    ]
    rows = np.array([row for row, _ in cases], dtype=dtype)
    expected = [float(value) for _, value in cases]
    np.testing.assert_array_equal(traverse(forest_arrays(TWO_TREES, dtype), rows)[:, 0],
                                  expected)
    np.testing.assert_array_equal(evaluate(TWO_TREES, rows, dtype), expected)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_forest_arrays_walk_matches_the_dump_at_and_around_every_threshold(dtype: str) -> None:
    trees = [[split(0, f, op, t, 1, 2, default_left=dl), leaf(1, 1.0 * k), leaf(2, 100.0 * k)]
             for k, (f, op, t, dl) in enumerate(
                 ((f, op, t, dl) for f, t in ((0, -0.75), (1, 0.1)) for op in OPS
                  for dl in (True, False)), start=1)]
    trees += [TREE_A, TREE_B]
    forest = dump(trees)
    arrays = forest_arrays(forest, dtype)
    column: list[float] = [np.nan, np.inf, -np.inf, 0.0]
    for t in (-0.75, 0.1, 0.5, 1.0, 2.0, 3.0):
        exact = float(np.dtype(dtype).type(t))
        column += [exact, up(exact, dtype), down(exact, dtype)]
    rows = np.array([[a, b] for a in column for b in column], dtype=dtype)
    np.testing.assert_array_equal(traverse(arrays, rows)[:, 0], evaluate(forest, rows, dtype))
    for row in rows:  # depths[t] steps always end on a leaf
        assert all(is_leaf(arrays, walk(arrays, t, row)) for t in range(len(trees)))


def test_forest_arrays_single_leaf_tree_has_depth_zero() -> None:
    arrays = forest_arrays(dump([[leaf(0, 4.5)]]), F64)
    np.testing.assert_array_equal(arrays["depths"], [0])
    assert is_leaf(arrays, 0)
    assert traverse(arrays, np.array([[np.nan, 1.0]]))[0, 0] == 4.5


def test_forest_arrays_lays_out_random_forest_leaf_vectors() -> None:
    trees = [stump([1.0, 0.0, 0.0], [0.0, 0.5, 0.5]), stump([0.0, 1.0, 0.0], [0.2, 0.2, 0.6])]
    forest = dump(trees, num_class=3, class_id=[-1, -1], leaf_vector_shape=[1, 3])
    arrays = forest_arrays(forest, F64)
    np.testing.assert_array_equal(arrays["out_offset"], [0, 0])
    np.testing.assert_array_equal(arrays["out_width"], [3, 3])
    np.testing.assert_array_equal(arrays["tree_count"], [2, 2, 2])
    assert len(arrays["leaf_values"]) == 12
    np.testing.assert_array_equal(arrays["nodes"]["leaf"][[1, 2, 4, 5]], [0, 3, 6, 9])
    np.testing.assert_allclose(traverse(arrays, np.array([[-1.0], [1.0]])),
                               [[1.0, 1.0, 0.0], [0.2, 0.7, 1.1]])


def test_forest_arrays_one_tree_per_class_counts_trees_per_column() -> None:
    trees = [[leaf(0, float(i))] for i in range(6)]
    arrays = forest_arrays(dump(trees, num_class=3, class_id=[0, 1, 2, 0, 1, 2]), F64)
    np.testing.assert_array_equal(arrays["out_offset"], [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(arrays["out_width"], [1] * 6)
    np.testing.assert_array_equal(arrays["tree_count"], [2, 2, 2])
    np.testing.assert_array_equal(traverse(arrays, np.zeros((1, 1))), [[3.0, 5.0, 7.0]])


def test_forest_arrays_places_targets_and_multi_target_leaf_vectors() -> None:
    per_target = forest_arrays(dump([[leaf(0, 1.0)]] * 3, num_target=2, target_id=[0, 1, 1]),
                               F64)
    np.testing.assert_array_equal(per_target["out_offset"], [0, 1, 1])
    np.testing.assert_array_equal(per_target["tree_count"], [1, 2])
    vectors = forest_arrays(dump([[leaf(0, [1.0, 2.0])]], num_target=2, target_id=[-1],
                                 class_id=[-1], leaf_vector_shape=[2, 1]), F64)
    np.testing.assert_array_equal(vectors["out_offset"], [0])
    np.testing.assert_array_equal(vectors["out_width"], [2])
    np.testing.assert_array_equal(vectors["tree_count"], [1, 1])


def test_forest_arrays_class_vector_per_target() -> None:
    arrays = forest_arrays(dump([[leaf(0, [0.25, 0.75])]] * 2, num_class=2, num_target=2,
                                target_id=[0, 1], class_id=[-1, -1], leaf_vector_shape=[1, 2]),
                           F64)
    np.testing.assert_array_equal(arrays["out_offset"], [0, 2])
    np.testing.assert_array_equal(arrays["out_width"], [2, 2])
    np.testing.assert_array_equal(arrays["tree_count"], [1, 1, 1, 1])


def test_forest_arrays_refuses_categorical_splits() -> None:
    node = split(0, 0, "<", 0.5, 1, 2, default_left=True)
    node["node_type"] = "categorical_test_node"
    with pytest.raises(ForestUnsupported, match="categorical_test_node splits"):
        forest_arrays(dump([[node, leaf(1, 1.0), leaf(2, 2.0)]]), F64)


def test_forest_arrays_refuses_equality_comparisons() -> None:
    node = split(0, 0, "==", 0.5, 1, 2, default_left=True)
    with pytest.raises(ForestUnsupported, match="comparison '=='"):
        forest_arrays(dump([[node, leaf(1, 1.0), leaf(2, 2.0)]]), F64)


@pytest.mark.parametrize(("shape", "target_id", "class_id"), [
    ([1, 3], 0, 0),     # a class vector but also a class id
    ([1, 1], 0, -1),    # a scalar leaf without a class for a 3-class model
    ([1, 2], 0, -1),    # a vector of neither num_class nor num_target * num_class
    ([1, 3], -1, -1),   # all targets but only one target's width
])
def test_forest_arrays_refuses_leaf_layouts_the_kernel_lacks(shape: list[int], target_id: int,
                                                             class_id: int) -> None:
    forest = dump([[leaf(0, [0.0] * int(np.prod(shape)))]], num_class=3, num_target=2,
                  target_id=[target_id], class_id=[class_id], leaf_vector_shape=shape)
    with pytest.raises(ForestUnsupported, match="leaf vectors of shape"):
        forest_arrays(forest, F64)


def test_forest_arrays_refuses_a_leaf_of_the_wrong_length() -> None:
    forest = dump([stump([1.0, 0.0, 0.0], [0.5, 0.5])], num_class=3, class_id=[-1],
                  leaf_vector_shape=[1, 3])
    with pytest.raises(ForestUnsupported, match="a leaf has 2 values, expected 3"):
        forest_arrays(forest, F64)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("op", ["<=", ">"])
def test_forest_arrays_rewrites_an_infinite_threshold_exactly(op: str, dtype: str) -> None:
    forest = dump([[split(0, 0, op, np.inf, 1, 2, default_left=True), leaf(1, 1.0),
                    leaf(2, 2.0)]])
    rows = np.array([[np.inf], [1.0], [-np.inf], [np.nan]], dtype=dtype)
    np.testing.assert_array_equal(traverse(forest_arrays(forest, dtype), rows)[:, 0],
                                  evaluate(forest, rows, dtype))


# ---------------------------------------------------------------------------- check_forest


def copied(arrays: Arrays) -> Arrays:
    return {name: array.copy() for name, array in arrays.items()}


def accepted(arrays: Arrays, task: TreeTask) -> bool:
    try:
        check_forest(arrays, task)
    except IncompatibleBundleError:
        return False
    return True


CLASSES = TreeTask(task="multiclass", num_feature=1, num_target=1, num_class=3,
                   postprocessor="identity_multiclass")


@pytest.mark.parametrize("dtype", [F64, F32])
def test_check_forest_accepts_forest_arrays_output(dtype: str) -> None:
    assert accepted(forest_arrays(TWO_TREES, dtype), REGRESSION)
    assert accepted(forest_arrays(dump([stump([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])], num_class=3,
                                       class_id=[-1], leaf_vector_shape=[1, 3]), dtype), CLASSES)
    assert accepted(forest_arrays(dump([[leaf(0, 1.0)], TREE_B]), dtype), REGRESSION)


def _set(name: str, index: int | slice, value: float, field: str | None = None
         ) -> Callable[[Arrays], None]:
    def corrupt(arrays: Arrays) -> None:
        target = arrays[name][field] if field else arrays[name]
        target[index] = value
    return corrupt


def _replace(name: str, value: list[int]) -> Callable[[Arrays], None]:
    def corrupt(arrays: Arrays) -> None:
        arrays[name] = np.array(value, dtype=arrays[name].dtype)
    return corrupt


CHILD = "a child outside its tree"

# TWO_TREES' table: tree A is nodes 0-4 (splits 0 and 2), tree B nodes 5-9 (splits 5 and
# 6), leaves 1, 3, 4, 7, 8 and 9 with leaf values 0-5
CORRUPTIONS = [
    (_set("nodes", 0, 4, "left"), CHILD),           # slot1 would be tree B's root
    (_set("nodes", 0, 5, "left"), CHILD),           # both children in tree B
    (_set("nodes", 6, 9, "left"), CHILD),           # slot1 past the end of the table
    (_set("nodes", 2, 10, "left"), CHILD),
    (_set("nodes", 6, 3, "left"), CHILD),           # before the start of its tree
    (_set("nodes", 6, 5, "left"), CHILD),           # backwards, to its own root: a cycle
    (_set("nodes", 2, 1, "left"), CHILD),           # backwards within its tree
    (_set("nodes", 6, 6, "left"), CHILD),           # a split pointing to itself
    (_set("nodes", 2, -1, "left"), CHILD),
    (_set("nodes", 3, 4, "left"), CHILD),           # a leaf whose slot1 is tree B's root
    (_set("nodes", 1, 0.5, "threshold"), CHILD),    # self loop but not NaN: not a leaf
    (_set("nodes", 1, 1, "feature"), CHILD),        # self loop with a feature: not a leaf
    (_set("nodes", 1, MISSING, "feature"), CHILD),  # self loop with the missing bit: NaN steps on
    (_set("nodes", 0, 2, "feature"), "a feature index out of range"),
    (_set("nodes", 5, MISSING | 2, "feature"), "a feature index out of range"),
    (_set("nodes", 0, FEATURE, "feature"), "a feature index out of range"),
    (_set("nodes", 2, 0xFFFFFFFF, "feature"), "a feature index out of range"),
    (_set("nodes", 1, -1, "leaf"), "a leaf index out of range"),
    (_set("nodes", 9, 6, "leaf"), "a leaf index out of range"),   # 6 + 1 > 6 values
    (_set("nodes", 0, 6, "leaf"), "a leaf index out of range"),   # splits' leaf too
    (_set("out_offset", 1, 1), "an output column out of range"),
    (_set("out_offset", 0, -1), "an output column out of range"),
    (_set("out_width", 0, 2), "an output column out of range"),
    (_set("out_width", 0, 0), "an output column out of range"),
    (_set("depths", 0, -1), "a tree depth out of range"),
    (_set("depths", 1, 11), "a tree depth out of range"),
    (_replace("roots", [5, 0]), "tree roots out of order"),
    (_replace("roots", [0, 0]), "tree roots out of order"),
    (_replace("roots", [0, 10]), "tree roots out of order or out of range"),
    (_replace("roots", [1, 5]), "tree roots out of order"),
    (_replace("depths", [2]), "array lengths disagree"),
    (_replace("out_offset", [0, 0, 0]), "array lengths disagree"),
    (_replace("out_width", [1]), "array lengths disagree"),
    (_replace("tree_count", [2, 0]), "array lengths disagree"),
    (_replace("roots", []), "array lengths disagree"),
]


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize(("corrupt", "message"), CORRUPTIONS)
def test_check_forest_refuses_each_corruption(corrupt: Callable[[Arrays], None], message: str,
                                              dtype: str) -> None:
    arrays = copied(forest_arrays(TWO_TREES, dtype))
    corrupt(arrays)
    with pytest.raises(IncompatibleBundleError, match=f"forest table is inconsistent: .*{message}"):
        check_forest(arrays, REGRESSION)


@pytest.mark.parametrize("corrupt", [
    _set("nodes", 9, 5, "leaf"),              # the last leaf value
    _set("nodes", 5, 1, "feature"),           # the missing bit is not part of the index
    _set("nodes", 2, 1, "feature"),
    _set("nodes", 0, 3, "left"),              # children 3 and 4: the last two of tree A
    _set("nodes", 6, 8, "left"),
    _set("nodes", 0, np.nan, "threshold"),    # a split that only ever takes slot0 is in bounds
    _set("depths", 0, 10),
])
def test_check_forest_accepts_what_is_still_in_bounds(corrupt: Callable[[Arrays], None]) -> None:
    arrays = copied(forest_arrays(TWO_TREES, F64))
    corrupt(arrays)
    assert accepted(arrays, REGRESSION)


@pytest.mark.parametrize(("corrupt", "message"), [
    (_set("nodes", 0, INT32_MAX, "left"), CHILD),
    (_set("nodes", 1, INT32_MAX, "leaf"), "a leaf index out of range"),
    (_set("out_offset", 0, INT32_MAX), "an output column out of range"),
])
def test_check_forest_refuses_indices_that_overflow_int32(corrupt: Callable[[Arrays], None],
                                                          message: str) -> None:
    arrays = copied(forest_arrays(TWO_TREES, F64))
    corrupt(arrays)
    with pytest.raises(IncompatibleBundleError, match=message):
        check_forest(arrays, REGRESSION)


def test_check_forest_checks_leaf_vectors_against_their_width() -> None:
    arrays = copied(forest_arrays(dump([stump([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])], num_class=3,
                                       class_id=[-1], leaf_vector_shape=[1, 3]), F64))
    arrays["nodes"]["leaf"][2] = 3  # values 3, 4, 5 of 6: the last vector
    assert accepted(arrays, CLASSES)
    arrays["nodes"]["leaf"][2] = 4  # 4 + 3 > 6 values
    with pytest.raises(IncompatibleBundleError, match="a leaf index out of range"):
        check_forest(arrays, CLASSES)


def test_check_forest_refuses_a_task_with_fewer_features() -> None:
    one_feature = TreeTask(task="regression", num_feature=1, num_target=1, num_class=1,
                           postprocessor="identity")
    with pytest.raises(IncompatibleBundleError, match="a feature index out of range"):
        check_forest(forest_arrays(TWO_TREES, F64), one_feature)


# ---------------------------------------------------------------------------- tree_outputs


def task_of(task: str = "binary", *, num_class: int = 1, num_target: int = 1,
            postprocessor: str = "sigmoid", **extra: float) -> TreeTask:
    options: dict[str, Any] = {"task": task, "num_feature": 4, "num_target": num_target,
                               "num_class": num_class, "postprocessor": postprocessor, **extra}
    return TreeTask.from_options(options)


def test_from_options_reads_the_description_with_defaults() -> None:
    task = task_of("multiclass", num_class=3, num_target=2, postprocessor="softmax")
    assert task == TreeTask(task="multiclass", num_feature=4, num_target=2, num_class=3,
                            postprocessor="softmax", sigmoid_alpha=1.0, ratio_c=1.0)
    assert task.width == 6 and task.classes == 3
    assert task_of(sigmoid_alpha=2.5).sigmoid_alpha == 2.5


@pytest.mark.parametrize(("options", "message"), [
    ({}, "incomplete"),
    ({"task": "binary", "num_feature": 4, "num_target": 1, "num_class": 1}, "incomplete"),
    ({"task": "binary", "num_feature": "four", "num_target": 1, "num_class": 1,
      "postprocessor": "sigmoid"}, "incomplete"),
    ({"task": "binary", "num_feature": None, "num_target": 1, "num_class": 1,
      "postprocessor": "sigmoid"}, "incomplete"),
    ({"task": "ranking", "num_feature": 4, "num_target": 1, "num_class": 1,
      "postprocessor": "identity"}, "unknown tree task 'ranking'"),
    ({"task": "binary", "num_feature": 4, "num_target": 1, "num_class": 1,
      "postprocessor": "tanh"}, "unknown postprocessor 'tanh'"),
])
def test_from_options_refuses_incomplete_or_unknown(options: dict[str, Any],
                                                    message: str) -> None:
    with pytest.raises(IncompatibleBundleError, match=message):
        TreeTask.from_options(options)


def test_postprocess_sigmoid_uses_alpha_and_keeps_dtype() -> None:
    margin = np.array([[0.0], [1.0], [-2.0]], dtype=np.float32)
    out = postprocess(margin, task_of(sigmoid_alpha=2.0))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], 1 / (1 + np.exp([0.0, -2.0, 4.0])), rtol=1e-6)


def test_postprocess_sigmoid_does_not_warn_on_overflow() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = postprocess(np.array([[-1000.0], [1000.0]]), task_of())
    np.testing.assert_array_equal(out[:, 0], [0.0, 1.0])


def test_postprocess_softmax_rows_sum_to_one() -> None:
    margin = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    out = postprocess(margin, task_of("multiclass", num_class=3, postprocessor="softmax"))
    np.testing.assert_allclose(out.sum(axis=1), [1.0, 1.0])
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(out[0], e / e.sum())
    np.testing.assert_allclose(out[1], [1.0, 0.0, 0.0])


def test_postprocess_softmax_normalises_each_target_group() -> None:
    margin = np.array([[0.0, 0.0, 5.0, 5.0], [1.0, 3.0, 2.0, 0.0]])
    out = postprocess(margin, task_of("multiclass", num_class=2, num_target=2,
                                      postprocessor="softmax"))
    np.testing.assert_allclose(out.reshape(2, 2, 2).sum(axis=2), np.ones((2, 2)))
    np.testing.assert_allclose(out[0], [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(out[1, :2], [1 / (1 + np.e ** 2), 1 / (1 + np.e ** -2)])


def test_postprocess_exponential_standard_ratio_and_identity() -> None:
    margin = np.array([[0.0], [2.0], [-4.0]])
    ratio = postprocess(margin, task_of("regression", postprocessor="exponential_standard_ratio",
                                        ratio_c=2.0))
    np.testing.assert_allclose(ratio[:, 0], [1.0, 0.5, 4.0])
    np.testing.assert_array_equal(postprocess(margin, task_of("regression",
                                                              postprocessor="identity")), margin)


def test_binary_one_score_becomes_two_probabilities_and_a_label() -> None:
    values = np.array([[0.2], [0.5], [0.5000001], [0.9]], dtype=np.float32)
    probabilities, label = task_outputs(values, task_of())
    assert probabilities.dtype == np.float32 and probabilities.shape == (4, 2)
    np.testing.assert_allclose(probabilities, [[0.8, 0.2], [0.5, 0.5], [0.4999999, 0.5000001],
                                               [0.1, 0.9]], rtol=1e-6)
    assert label.dtype == np.int64
    np.testing.assert_array_equal(label, [0, 0, 1, 1])  # exactly 0.5 is class 0


def test_binary_two_columns_take_the_argmax() -> None:
    values = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    probabilities, label = task_outputs(values, task_of(num_class=2,
                                                        postprocessor="identity_multiclass"))
    np.testing.assert_array_equal(probabilities, values)
    np.testing.assert_array_equal(label, [0, 1, 0])
    assert label.dtype == np.int64


def test_multiclass_probabilities_and_argmax_label() -> None:
    values = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2]])
    probabilities, label = task_outputs(values, task_of("multiclass", num_class=3,
                                                        postprocessor="softmax"))
    np.testing.assert_array_equal(probabilities, values)
    assert probabilities.flags.c_contiguous
    np.testing.assert_array_equal(label, [2, 0, 1])


def test_regression_one_target_is_a_vector_and_two_a_matrix() -> None:
    one = task_outputs(np.array([[1.5], [2.5]]), task_of("regression", postprocessor="identity"))
    assert len(one) == 1 and one[0].shape == (2,)
    np.testing.assert_array_equal(one[0], [1.5, 2.5])
    two = task_outputs(np.array([[1.0, 2.0], [3.0, 4.0]]),
                       task_of("regression", num_target=2, postprocessor="identity"))
    assert len(two) == 1
    np.testing.assert_array_equal(two[0], [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.parametrize(("task", "names", "shapes"), [
    (task_of("regression", postprocessor="identity"), ["predictions"], [[-1]]),
    (task_of("regression", num_target=3, postprocessor="identity"), ["predictions"], [[-1, 3]]),
    (task_of(), ["probabilities", "label"], [[-1, 2], [-1]]),
    (task_of(num_class=2, postprocessor="identity_multiclass"), ["probabilities", "label"],
     [[-1, 2], [-1]]),
    (task_of("multiclass", num_class=4, postprocessor="softmax"), ["probabilities", "label"],
     [[-1, 4], [-1]]),
])
def test_output_names_and_shapes(task: TreeTask, names: list[str],
                                 shapes: list[list[int]]) -> None:
    assert task.output_names() == names
    assert task.output_shapes() == shapes


# ---------------------------------------------------------------------------- crossover_rows


def timings(rows: dict[int, float], forest: dict[int, float]) -> dict[str, dict[str, float]]:
    return {"rows": {str(n): ms for n, ms in rows.items()},
            "forest": {str(n): ms for n, ms in forest.items()}}


def test_crossover_is_where_forest_becomes_faster() -> None:
    found, reason = crossover_rows(timings({1: 0.01, 4: 0.02, 16: 0.05, 64: 0.2, 256: 0.8},
                                           {1: 0.05, 4: 0.06, 16: 0.07, 64: 0.1, 256: 0.3}))
    assert found == 64
    assert "forest path from 64 rows" in reason


def test_crossover_none_when_forest_never_faster() -> None:
    found, reason = crossover_rows(timings({1: 0.01, 64: 0.1}, {1: 0.02, 64: 0.2}))
    assert found is None
    assert "rows path for every batch" in reason


def test_crossover_smallest_count_when_forest_always_faster() -> None:
    found, _ = crossover_rows(timings({1: 0.05, 16: 0.2, 1024: 3.0}, {1: 0.05, 16: 0.1,
                                                                        1024: 1.0}))
    assert found == 1  # a tie counts as at least as fast


def test_crossover_needs_forest_faster_at_every_larger_count() -> None:
    found, _ = crossover_rows(timings({1: 0.01, 4: 0.05, 16: 0.1, 64: 0.5, 256: 2.0},
                                      {1: 0.02, 4: 0.04, 16: 0.2, 64: 0.3, 256: 1.0}))
    assert found == 64


def test_crossover_orders_counts_numerically() -> None:
    # as strings "1024" < "256" < "64" < "8"
    found, _ = crossover_rows(timings({8: 0.01, 64: 0.5, 256: 2.0, 1024: 8.0},
                                      {8: 0.02, 64: 0.3, 256: 1.0, 1024: 3.0}))
    assert found == 64


@pytest.mark.parametrize("measured", [
    {}, {"rows": {}, "forest": {}}, {"rows": {"1": 0.1}},
    {"rows": {"1": 0.1}, "forest": {"4": 0.1}},
])
def test_crossover_none_without_timings(measured: dict[str, dict[str, float]]) -> None:
    found, reason = crossover_rows(measured)
    assert found is None
    assert "no timings" in reason


# ---------------------------------------------------------------------------- refuse_pickle


def _refused(path: Path) -> str:
    with pytest.raises(ModelLoadError) as caught:
        refuse_pickle(path)
    message = str(caught.value)
    assert "never unpickles" in message and "skops.io.dump" in message
    return message


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_refuse_pickle_refuses_pickles_by_content(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=protocol))
    assert "model.bin looks like a Python pickle" in _refused(path)


@pytest.mark.parametrize("name", ["model.joblib", "model.pkl", "MODEL.PKL", "m.pickle"])
def test_refuse_pickle_refuses_pickle_suffixes_whatever_the_content(tmp_path: Path,
                                                                   name: str) -> None:
    path = tmp_path / name
    path.write_text('{"learner": {}}')
    assert "looks like a pickle/joblib file" in _refused(path)


@pytest.mark.parametrize("compress", [
    zlib.compress, lambda b: zlib.compress(b, 1), lambda b: zlib.compress(b, 9),
    gzip.compress, bz2.compress, lzma.compress,
])
def test_refuse_pickle_refuses_compressed_files(tmp_path: Path,
                                                compress: Callable[[bytes], bytes]) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(compress(b'{"learner": {}}'))
    _refused(path)


@pytest.mark.parametrize(("name", "text"), [
    ("model.json", '{"learner": {}}'),
    ("model.txt", "tree\nversion=v4\n"),
])
def test_refuse_pickle_passes_safe_formats(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    refuse_pickle(path)  # raises ModelLoadError if refused
    assert path.read_text() == text


# ---------------------------------------------------------------------------- compare_outputs


def test_compare_outputs_integer_labels_must_match_exactly() -> None:
    want = [np.array([[0.9, 0.1]]), np.array([0, 1, 2], dtype=np.int64)]
    got = [np.array([[0.9, 0.1]]), np.array([0, 1, 1], dtype=np.int64)]
    result = compare_outputs(want, got, Tolerance())
    assert not result.passed
    assert "must match exactly" in result.message
    assert "output 1: 1 of 3 values differ" in result.message


def test_compare_outputs_equal_labels_pass() -> None:
    labels = np.array([0, 1, 2, 2], dtype=np.int64)
    probabilities = np.array([[0.6, 0.4]])
    result = compare_outputs([probabilities, labels],
                             [probabilities + 1e-6, labels.copy()], Tolerance())
    assert result.passed and result.message == ""


# ---------------------------------------------------------------------------- any-rows serving


ANY = signature_of([("data", F32, [-1, 4])],
                   [("probabilities", F32, [-1, 2]), ("label", "int64", [-1])])


def test_pack_any_rows_concatenates_without_padding() -> None:
    r1: list[np.ndarray] = [np.array([[1, 2]], np.float32), np.array([7], np.int64)]
    r2: list[np.ndarray] = [np.array([[3, 4], [5, 6]], np.float32), np.array([8, 9], np.int64)]
    a, b = pack([r1, r2], ANY_ROWS)
    np.testing.assert_array_equal(a, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(b, [7, 8, 9])
    assert a.dtype == np.float32 and b.dtype == np.int64


def test_compiled_batch_is_any_rows_when_every_dim0_is_variable() -> None:
    assert compiled_batch(ANY, 64) == ANY_ROWS
    assert compiled_batch(ANY, 100_000) == ANY_ROWS


def test_compiled_batch_refuses_fixed_outputs_of_an_any_rows_model() -> None:
    sig = signature_of([("data", F32, [-1, 4])], [("y", F32, [4])])
    with pytest.raises(ServerConfigError, match=r"do not have the batch \(-1\) in dim 0"):
        compiled_batch(sig, 8)


def _meta(shape: list[int]) -> TensorMeta:
    return signature_of([("data", F32, shape)], [("y", F32, shape)]).inputs[0]


def takes(shape: tuple[int, ...], meta: TensorMeta, max_batch: int | None) -> bool:
    try:
        _check_shape(shape, meta, max_batch)
    except InputError:
        return False
    return True


@pytest.mark.parametrize("shape", [(1, 4), (7, 4), (100_000, 4)])
def test_check_shape_any_rows_takes_any_positive_count(shape: tuple[int, ...]) -> None:
    assert takes(shape, _meta([-1, 4]), None)


@pytest.mark.parametrize("shape", [(0, 4), (3, 5), (3,), (3, 4, 1)])
def test_check_shape_any_rows_refuses_empty_or_wrong_features(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match=r"expects data \(FP32 \[any, 4\]\)"):
        _check_shape(shape, _meta([-1, 4]), None)


def test_check_shape_any_rows_with_max_batch_caps_the_rows() -> None:
    meta = _meta([-1, 4])
    assert takes((1, 4), meta, 8) and takes((8, 4), meta, 8)
    for rows in (0, 9):
        with pytest.raises(InputError, match=r"expects data \(FP32 \[1\.\.8, 4\]\)"):
            _check_shape((rows, 4), meta, 8)


def test_check_shape_fixed_batch_with_max_batch_takes_fewer_rows() -> None:
    assert takes((2, 2), _meta([4, 2]), 3)
