"""The node table of the forest kernel (``forest_kernel.c``), built from a Treelite dump.

Pure: ``forest_arrays(dump, dtype)`` takes ``json.loads(model.dump_as_json())`` and the
input dtype (float32 or float64, the model's threshold type) and returns the arrays the
kernel walks, or raises ``ForestUnsupported`` saying why the model cannot use it
(categorical splits, leaf vectors the kernel does not lay out); the bundle then has the
TL2cgen path only, and says so.

Each tree is laid out breadth-first with a node's children adjacent (slot0, slot1). The
kernel takes slot1 when ``x >= threshold``, or when x is NaN and the node's missing bit
(bit 31 of ``feature``) is set. Every split is rewritten to that rule exactly, in the
input's own precision:

====== ================== ================== =========================
split  slot0              slot1              threshold
====== ================== ================== =========================
x < t  left (true) child  right child        t
x <= t left child         right child        next representable above t
x > t  right child        left child         next representable above t
x >= t right child        left child         t
====== ================== ================== =========================

and the missing bit is set when the default child is in slot1. A leaf has a NaN
threshold and points to itself, so a row may take ``depth`` steps in any tree.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from neofleet.runtime.backends.trees import NODE_DTYPES

MAX_NODES = 1 << 30
MISSING_BIT = 1 << 31


class ForestUnsupported(Exception):
    """The model has something the forest kernel does not implement."""


@dataclass(frozen=True)
class _Layout:
    offset: int
    width: int


Row = tuple[float, int, int, int]


def forest_arrays(dump: dict[str, Any], dtype: str) -> dict[str, np.ndarray]:
    """``nodes``, ``roots``, ``depths``, ``leaf_values``, ``out_offset``, ``out_width`` and
    ``tree_count`` (trees contributing to each output column, for averaging)."""
    real = np.dtype(dtype).type
    num_class = max(int(c) for c in dump["num_class"])
    width = int(dump["num_target"]) * num_class
    nodes: list[Row] = []
    leaves: list[float] = []
    roots, depths, offsets, widths = [], [], [], []
    tree_count = np.zeros(width, dtype=np.int32)
    for t, tree in enumerate(dump["trees"]):
        layout = _tree_layout(dump, t, num_class, width)
        roots.append(len(nodes))
        depths.append(_append_tree(tree, nodes, leaves, layout.width, real))
        offsets.append(layout.offset)
        widths.append(layout.width)
        tree_count[layout.offset:layout.offset + layout.width] += 1
        if len(nodes) > MAX_NODES:
            raise ForestUnsupported(f"more than {MAX_NODES} nodes")
    table = np.zeros(len(nodes), dtype=NODE_DTYPES[np.dtype(dtype).name])
    for field, column in zip(("threshold", "feature", "left", "leaf"), zip(*nodes, strict=True),
                             strict=True):
        table[field] = column
    return {"nodes": table,
            "roots": np.array(roots, dtype=np.int32),
            "depths": np.array(depths, dtype=np.int32),
            "leaf_values": np.array(leaves, dtype=np.float64),
            "out_offset": np.array(offsets, dtype=np.int32),
            "out_width": np.array(widths, dtype=np.int32),
            "tree_count": tree_count}


def _tree_layout(dump: dict[str, Any], t: int, num_class: int, width: int) -> _Layout:
    target, klass = int(dump["target_id"][t]), int(dump["class_id"][t])
    leaf_len = int(np.prod(dump["leaf_vector_shape"]))
    if leaf_len == 1 and target >= 0 and klass >= 0:
        return _Layout(target * num_class + klass, 1)
    if leaf_len == num_class and klass < 0 and target >= 0:
        return _Layout(target * num_class, num_class)
    if leaf_len == width and klass < 0 and target < 0:
        return _Layout(0, width)
    raise ForestUnsupported(f"tree {t}: leaf vectors of shape {dump['leaf_vector_shape']} "
                            f"with target_id {target}, class_id {klass}")


def _append_tree(tree: dict[str, Any], nodes: list[Row], leaves: list[float], leaf_width: int,
                 real: type[np.floating[Any]]) -> int:
    """Append one tree breadth-first (children adjacent) and its leaf values; its depth."""
    by_id = {int(n["node_id"]): n for n in tree["nodes"]}
    root = len(nodes)
    slots: dict[int, Row] = {}
    queue: deque[tuple[int, int, int]] = deque([(0, root, 0)])  # node id, index, depth
    next_free, depth = root + 1, 0
    while queue:
        node_id, index, level = queue.popleft()
        depth = max(depth, level)
        node = by_id[node_id]
        if "leaf_value" in node:
            slots[index] = (float("nan"), 0, index, len(leaves))
            leaves.extend(_leaf_values(node, leaf_width))
            continue
        slot0, slot1, threshold, missing_in_slot1 = _split(node, real)
        slots[index] = (threshold, int(node["split_feature_id"])
                        | (MISSING_BIT if missing_in_slot1 else 0), next_free, 0)
        queue.append((slot0, next_free, level + 1))
        queue.append((slot1, next_free + 1, level + 1))
        next_free += 2
    if len(slots) != len(by_id):
        raise ForestUnsupported("a tree whose nodes are not all reachable from its root")
    nodes.extend(slots[i] for i in range(root, next_free))
    return depth


def _leaf_values(node: dict[str, Any], width: int) -> list[float]:
    value = node["leaf_value"]
    values = [float(v) for v in value] if isinstance(value, list) else [float(value)]
    if len(values) != width:
        raise ForestUnsupported(f"a leaf has {len(values)} values, expected {width}")
    return values


def _split(node: dict[str, Any], real: type[np.floating[Any]]) -> tuple[int, int, float, bool]:
    """(slot0 child id, slot1 child id, threshold, default child in slot1)."""
    if node.get("node_type") != "numerical_test_node":
        raise ForestUnsupported(f"{node.get('node_type')} splits (categorical features)")
    op, t = node["comparison_op"], real(node["threshold"])
    true_child, false_child = int(node["left_child"]), int(node["right_child"])
    if op not in ("<", "<=", ">", ">="):
        raise ForestUnsupported(f"comparison {op!r}")
    if op in ("<=", ">"):
        # x <= +inf holds for every number, so no x >= t can stand for it: a NaN threshold
        # makes x >= t false for every x (slot0); missing values still follow the default.
        t = real(np.nan) if t == np.inf else np.nextafter(t, real(np.inf))
    slot0, slot1 = (true_child, false_child) if op in ("<", "<=") else (false_child, true_child)
    default = true_child if node["default_left"] else false_child
    return slot0, slot1, float(t), default == slot1
