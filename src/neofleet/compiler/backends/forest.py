"""The node table of the forest kernel (``forest_kernel.c``), built from a Treelite dump.

Pure: ``forest_arrays(dump)`` takes ``json.loads(model.dump_as_json())`` and returns the
arrays the kernel walks, or raises ``ForestUnsupported`` saying why the model cannot use
it (categorical splits, leaf vectors the kernel does not lay out); the bundle then has
the TL2cgen path only, and says so.

Every comparison is normalised to ``<`` or ``<=`` (``>`` and ``>=`` swap the children);
leaves loop to themselves, so a row may take ``depth`` steps in any tree.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from neofleet.runtime.backends.trees import NODE_DTYPE

MAX_NODES = 1 << 30


class ForestUnsupported(Exception):
    """The model has something the forest kernel does not implement."""


@dataclass(frozen=True)
class _Layout:
    offset: int
    width: int


def forest_arrays(dump: dict[str, Any]) -> dict[str, np.ndarray]:
    """``nodes``, ``roots``, ``depths``, ``leaf_values``, ``out_offset``, ``out_width`` and
    ``tree_count`` (trees contributing to each output column, for averaging)."""
    num_class = max(int(c) for c in dump["num_class"])
    width = int(dump["num_target"]) * num_class
    nodes: list[tuple[float, int, int, int, int, int, int]] = []
    leaves: list[float] = []
    roots, depths, offsets, widths = [], [], [], []
    tree_count = np.zeros(width, dtype=np.int32)
    for t, tree in enumerate(dump["trees"]):
        layout = _tree_layout(dump, t, num_class, width)
        roots.append(len(nodes))
        depths.append(_append_tree(tree, nodes, leaves, layout.width))
        offsets.append(layout.offset)
        widths.append(layout.width)
        tree_count[layout.offset:layout.offset + layout.width] += 1
        if len(nodes) > MAX_NODES:
            raise ForestUnsupported(f"more than {MAX_NODES} nodes")
    return {"nodes": np.array(nodes, dtype=NODE_DTYPE),
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


def _append_tree(tree: dict[str, Any], nodes: list[tuple[float, int, int, int, int, int, int]],
                 leaves: list[float], leaf_width: int) -> int:
    """Append one tree's nodes (global indices) and leaf values; return its depth."""
    by_id = {int(n["node_id"]): n for n in tree["nodes"]}
    base = len(nodes)
    index = {node_id: base + i for i, node_id in enumerate(sorted(by_id))}
    rows: dict[int, tuple[float, int, int, int, int, int, int]] = {}
    for node_id, node in by_id.items():
        rows[index[node_id]] = _node_row(node, index, leaves, leaf_width, index[node_id])
    nodes.extend(rows[i] for i in range(base, base + len(by_id)))
    return _depth(by_id)


def _node_row(node: dict[str, Any], index: dict[int, int], leaves: list[float],
              leaf_width: int, me: int) -> tuple[float, int, int, int, int, int, int]:
    if "leaf_value" in node:
        value = node["leaf_value"]
        values = [float(v) for v in value] if isinstance(value, list) else [float(value)]
        if len(values) != leaf_width:
            raise ForestUnsupported(f"a leaf has {len(values)} values, expected {leaf_width}")
        leaves.extend(values)
        return (0.0, 0, me, me, me, 0, len(leaves) - leaf_width)
    if node.get("node_type") != "numerical_test_node":
        raise ForestUnsupported(f"{node.get('node_type')} splits (categorical features)")
    left, right = index[int(node["left_child"])], index[int(node["right_child"])]
    missing = left if node["default_left"] else right
    op = node["comparison_op"]
    if op in (">", ">="):
        left, right, op = right, left, ("<=" if op == ">" else "<")
    if op not in ("<", "<="):
        raise ForestUnsupported(f"comparison {op!r}")
    return (float(node["threshold"]), int(node["split_feature_id"]), left, right, missing,
            int(op == "<="), 0)


def _depth(by_id: dict[int, dict[str, Any]]) -> int:
    depth, queue = 0, deque([(min(by_id), 0)])
    while queue:
        node_id, d = queue.popleft()
        depth = max(depth, d)
        node = by_id[node_id]
        if "leaf_value" not in node:
            queue.append((int(node["left_child"]), d + 1))
            queue.append((int(node["right_child"]), d + 1))
    return depth
