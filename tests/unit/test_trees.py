"""Tree models, the pure parts: the forest kernel's node table, its runtime check, the task
outputs, the crossover choice, pickle refusal, exact labels and any-rows serving."""

from __future__ import annotations

import bz2
import gzip
import lzma
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
from neofleet.runtime.backends.trees import check_forest
from neofleet.runtime.errors import IncompatibleBundleError, InputError, ServerConfigError
from neofleet.runtime.server.batching import ANY_ROWS, compiled_batch, pack
from neofleet.runtime.server.protocol import _check_shape
from neofleet.runtime.server.signature import TensorMeta, signature_of

Arrays = dict[str, np.ndarray]
F32 = "float32"

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
    nodes, width = arrays["nodes"], len(arrays["tree_count"])
    out = np.zeros((rows.shape[0], width))
    for r, row in enumerate(rows):
        for t, root in enumerate(arrays["roots"]):
            idx = int(root)
            for _ in range(int(arrays["depths"][t])):
                node = nodes[idx]
                x = row[node["feature"]]
                if np.isnan(x):
                    idx = int(node["missing"])
                elif x < node["threshold"] or (x == node["threshold"] and node["eq_left"]):
                    idx = int(node["left"])
                else:
                    idx = int(node["right"])
            start, w = int(nodes[idx]["leaf"]), int(arrays["out_width"][t])
            offset = int(arrays["out_offset"][t])
            out[r, offset:offset + w] += arrays["leaf_values"][start:start + w]
    return out


# ---------------------------------------------------------------------------- forest_arrays


def test_forest_arrays_numbers_nodes_globally_with_roots_and_depths() -> None:
    arrays = forest_arrays(TWO_TREES)
    assert len(arrays["nodes"]) == 10
    np.testing.assert_array_equal(arrays["roots"], [0, 5])
    np.testing.assert_array_equal(arrays["depths"], [2, 2])
    np.testing.assert_array_equal(arrays["leaf_values"], [1, 2, 3, 10, 20, 30])
    np.testing.assert_array_equal(arrays["out_offset"], [0, 0])
    np.testing.assert_array_equal(arrays["out_width"], [1, 1])
    np.testing.assert_array_equal(arrays["tree_count"], [2])


def test_forest_arrays_keeps_less_than_and_less_equal_splits() -> None:
    nodes = forest_arrays(TWO_TREES)["nodes"]
    root, inner = nodes[0], nodes[2]
    assert (root["threshold"], root["feature"], root["left"], root["right"]) == (0.5, 0, 1, 2)
    assert root["eq_left"] == 0 and root["missing"] == 1  # "<", default_left
    assert (inner["threshold"], inner["feature"], inner["left"], inner["right"]) == (2.0, 1, 3, 4)
    assert inner["eq_left"] == 1 and inner["missing"] == 4  # "<=", default right


def test_forest_arrays_swaps_children_of_greater_than_splits() -> None:
    nodes = forest_arrays(TWO_TREES)["nodes"]
    gt, ge = nodes[5], nodes[7]
    # "x1 > 1": left (10, node 6) when true; as "<=": left is the old right child (node 7)
    assert (gt["feature"], gt["left"], gt["right"], gt["eq_left"]) == (1, 7, 6, 1)
    assert gt["missing"] == 6  # default_left: the original left child, not the swapped one
    # "x0 >= 3" becomes "x0 < 3" with children swapped
    assert (ge["feature"], ge["left"], ge["right"], ge["eq_left"]) == (0, 9, 8, 0)
    assert ge["missing"] == 9  # default right: the original right child


def test_forest_arrays_leaves_loop_to_themselves() -> None:
    nodes = forest_arrays(TWO_TREES)["nodes"]
    for index, value_index in ((1, 0), (3, 1), (4, 2), (6, 3), (8, 4), (9, 5)):
        node = nodes[index]
        assert node["left"] == node["right"] == node["missing"] == index
        assert node["leaf"] == value_index


def test_forest_arrays_follow_node_ids_not_list_order() -> None:
    shuffled = [TREE_A[4], TREE_A[2], TREE_A[0], TREE_A[3], TREE_A[1]]
    a, b = forest_arrays(dump([shuffled])), forest_arrays(dump([TREE_A]))
    rows = np.array([[0.0, 0.0], [1.0, 2.0], [1.0, 3.0], [np.nan, np.nan]])
    np.testing.assert_array_equal(traverse(a, rows), traverse(b, rows))
    assert a["nodes"][2]["left"] == 3 and a["depths"][0] == 2


def test_forest_arrays_walk_gives_hand_computed_predictions_including_nan() -> None:
    rows = np.array([[0.0, 2.0], [1.0, 2.0], [1.0, 2.5], [3.0, 1.0], [2.0, 0.0],
                     [0.5, np.nan], [np.nan, 0.0], [np.nan, np.nan]])
    expected = [1 + 10, 2 + 10, 3 + 10, 2 + 20, 2 + 30, 3 + 10, 1 + 30, 1 + 10]
    np.testing.assert_array_equal(traverse(forest_arrays(TWO_TREES), rows)[:, 0], expected)


def test_forest_arrays_single_leaf_tree_has_depth_zero() -> None:
    arrays = forest_arrays(dump([[leaf(0, 4.5)]]))
    np.testing.assert_array_equal(arrays["depths"], [0])
    assert traverse(arrays, np.array([[np.nan, 1.0]]))[0, 0] == 4.5


def test_forest_arrays_lays_out_random_forest_leaf_vectors() -> None:
    trees = [stump([1.0, 0.0, 0.0], [0.0, 0.5, 0.5]), stump([0.0, 1.0, 0.0], [0.2, 0.2, 0.6])]
    forest = dump(trees, num_class=3, class_id=[-1, -1], leaf_vector_shape=[1, 3])
    arrays = forest_arrays(forest)
    np.testing.assert_array_equal(arrays["out_offset"], [0, 0])
    np.testing.assert_array_equal(arrays["out_width"], [3, 3])
    np.testing.assert_array_equal(arrays["tree_count"], [2, 2, 2])
    assert len(arrays["leaf_values"]) == 12
    np.testing.assert_array_equal(arrays["nodes"]["leaf"][[1, 2, 4, 5]], [0, 3, 6, 9])
    np.testing.assert_allclose(traverse(arrays, np.array([[-1.0], [1.0]])),
                               [[1.0, 1.0, 0.0], [0.2, 0.7, 1.1]])


def test_forest_arrays_one_tree_per_class_counts_trees_per_column() -> None:
    trees = [[leaf(0, float(i))] for i in range(6)]
    arrays = forest_arrays(dump(trees, num_class=3, class_id=[0, 1, 2, 0, 1, 2]))
    np.testing.assert_array_equal(arrays["out_offset"], [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(arrays["out_width"], [1] * 6)
    np.testing.assert_array_equal(arrays["tree_count"], [2, 2, 2])
    np.testing.assert_array_equal(traverse(arrays, np.zeros((1, 1))), [[3.0, 5.0, 7.0]])


def test_forest_arrays_places_targets_and_multi_target_leaf_vectors() -> None:
    per_target = forest_arrays(dump([[leaf(0, 1.0)]] * 3, num_target=2, target_id=[0, 1, 1]))
    np.testing.assert_array_equal(per_target["out_offset"], [0, 1, 1])
    np.testing.assert_array_equal(per_target["tree_count"], [1, 2])
    vectors = forest_arrays(dump([[leaf(0, [1.0, 2.0])]], num_target=2, target_id=[-1],
                                 class_id=[-1], leaf_vector_shape=[2, 1]))
    np.testing.assert_array_equal(vectors["out_offset"], [0])
    np.testing.assert_array_equal(vectors["out_width"], [2])
    np.testing.assert_array_equal(vectors["tree_count"], [1, 1])


def test_forest_arrays_class_vector_per_target() -> None:
    arrays = forest_arrays(dump([[leaf(0, [0.25, 0.75])]] * 2, num_class=2, num_target=2,
                                target_id=[0, 1], class_id=[-1, -1], leaf_vector_shape=[1, 2]))
    np.testing.assert_array_equal(arrays["out_offset"], [0, 2])
    np.testing.assert_array_equal(arrays["out_width"], [2, 2])
    np.testing.assert_array_equal(arrays["tree_count"], [1, 1, 1, 1])


def test_forest_arrays_refuses_categorical_splits() -> None:
    node = split(0, 0, "<", 0.5, 1, 2, default_left=True)
    node["node_type"] = "categorical_test_node"
    with pytest.raises(ForestUnsupported, match="categorical_test_node splits"):
        forest_arrays(dump([[node, leaf(1, 1.0), leaf(2, 2.0)]]))


def test_forest_arrays_refuses_equality_comparisons() -> None:
    node = split(0, 0, "==", 0.5, 1, 2, default_left=True)
    with pytest.raises(ForestUnsupported, match="comparison '=='"):
        forest_arrays(dump([[node, leaf(1, 1.0), leaf(2, 2.0)]]))


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
        forest_arrays(forest)


def test_forest_arrays_refuses_a_leaf_of_the_wrong_length() -> None:
    forest = dump([stump([1.0, 0.0, 0.0], [0.5, 0.5])], num_class=3, class_id=[-1],
                  leaf_vector_shape=[1, 3])
    with pytest.raises(ForestUnsupported, match="a leaf has 2 values, expected 3"):
        forest_arrays(forest)


# ---------------------------------------------------------------------------- check_forest


def copied(arrays: Arrays) -> Arrays:
    return {name: array.copy() for name, array in arrays.items()}


def accepted(arrays: Arrays, task: TreeTask) -> bool:
    try:
        check_forest(arrays, task)
    except IncompatibleBundleError:
        return False
    return True


def test_check_forest_accepts_forest_arrays_output() -> None:
    assert accepted(forest_arrays(TWO_TREES), REGRESSION)
    classes = TreeTask(task="multiclass", num_feature=1, num_target=1, num_class=3,
                       postprocessor="identity_multiclass")
    assert accepted(forest_arrays(dump([stump([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])], num_class=3,
                                       class_id=[-1], leaf_vector_shape=[1, 3])), classes)


def _set(name: str, index: int | slice, value: int, field: str | None = None
         ) -> Callable[[Arrays], None]:
    def corrupt(arrays: Arrays) -> None:
        target = arrays[name][field] if field else arrays[name]
        target[index] = value
    return corrupt


def _replace(name: str, value: list[int]) -> Callable[[Arrays], None]:
    def corrupt(arrays: Arrays) -> None:
        arrays[name] = np.array(value, dtype=arrays[name].dtype)
    return corrupt


@pytest.mark.parametrize(("corrupt", "message"), [
    (_set("nodes", 0, 6, "left"), "a left child outside its tree"),
    (_set("nodes", 7, 2, "right"), "a right child outside its tree"),
    (_set("nodes", 2, 10, "missing"), "a missing child outside its tree"),
    (_set("nodes", 2, -1, "left"), "a left child outside its tree"),
    (_set("nodes", 0, 2, "feature"), "a feature index out of range"),
    (_set("nodes", 5, -1, "feature"), "a feature index out of range"),
    (_set("nodes", 1, -1, "leaf"), "a leaf index out of range"),
    (_set("nodes", 9, 6, "leaf"), "a leaf index out of range"),
    (_set("out_offset", 1, 1), "an output column out of range"),
    (_set("out_width", 0, 2), "an output column out of range"),
    (_set("out_width", 0, 0), "an output column out of range"),
    (_set("depths", 0, -1), "a tree depth out of range"),
    (_replace("roots", [5, 0]), "tree roots out of order"),
    (_replace("roots", [0, 0]), "tree roots out of order"),
    (_replace("roots", [0, 10]), "tree roots out of order or out of range"),
    (_replace("roots", [1, 5]), "tree roots out of order"),
    (_replace("depths", [2]), "array lengths disagree"),
    (_replace("out_offset", [0, 0, 0]), "array lengths disagree"),
    (_replace("out_width", [1]), "array lengths disagree"),
    (_replace("tree_count", [2, 0]), "array lengths disagree"),
    (_replace("roots", []), "array lengths disagree"),
])
def test_check_forest_refuses_each_corruption(corrupt: Callable[[Arrays], None],
                                              message: str) -> None:
    arrays = copied(forest_arrays(TWO_TREES))
    corrupt(arrays)
    with pytest.raises(IncompatibleBundleError, match=f"forest table is inconsistent: .*{message}"):
        check_forest(arrays, REGRESSION)


def test_check_forest_checks_leaf_vectors_against_their_width() -> None:
    classes = TreeTask(task="multiclass", num_feature=1, num_target=1, num_class=3,
                       postprocessor="identity_multiclass")
    arrays = copied(forest_arrays(dump([stump([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])], num_class=3,
                                       class_id=[-1], leaf_vector_shape=[1, 3])))
    arrays["nodes"]["leaf"][2] = 4  # 4 + 3 > 6 values
    with pytest.raises(IncompatibleBundleError, match="a leaf index out of range"):
        check_forest(arrays, classes)


def test_check_forest_refuses_a_task_with_fewer_features() -> None:
    one_feature = TreeTask(task="regression", num_feature=1, num_target=1, num_class=1,
                           postprocessor="identity")
    with pytest.raises(IncompatibleBundleError, match="a feature index out of range"):
        check_forest(forest_arrays(TWO_TREES), one_feature)


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
