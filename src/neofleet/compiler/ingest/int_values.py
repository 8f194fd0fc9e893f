"""Which values an ONNX model's integer inputs accept (pure, over the graph).

Random integers are wrong for most integer inputs: token ids index an embedding table
(values past its rows make ONNX Runtime's Gather fail), a sample rate is compared with
the few rates the model supports. Without ``--sample-data`` the loader generates values
from these hints:

- an input that reaches a ``Gather`` as its indices (through casts and reshapes) takes
  values below the smallest table it indexes (the table is a constant of the graph);
- else an input compared (``Equal``) with constants takes one of those constants;
- else 0 or 1, what masks and flags take.

Subgraphs (``If`` branches, ``Loop`` bodies) are searched too: they read the outer
graph's values by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from neofleet.bundle.meta import TensorSpec
from neofleet.compiler.ingest.samples import ValueHint

# ops whose output carries the first input's values unchanged (reshaped, retyped)
PASS_THROUGH = frozenset({"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity",
                          "Expand", "Transpose", "Tile", "Concat"})


def integer_value_hints(model: Any, specs: Sequence[TensorSpec]) -> dict[str, ValueHint]:
    nodes = list(_all_nodes(model.graph))
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in nodes:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    shapes, scalars = _constants(model, nodes)
    hints = {}
    for spec in specs:
        if spec.dtype.startswith(("int", "uint")):
            hints[spec.name] = _hint(spec.name, consumers, shapes, scalars)
    return hints


def _hint(name: str, consumers: dict[str, list[tuple[Any, int]]],
          shapes: dict[str, list[int]], scalars: dict[str, int]) -> ValueHint:
    rows: list[int] = []
    compared: set[int] = set()
    for node, index in _uses(name, consumers):
        if node.op_type == "Gather" and index == 1 and node.input[0] in shapes:
            table = shapes[node.input[0]]
            axis = _attribute(node, "axis", 0)
            if table and -len(table) <= axis < len(table):
                rows.append(table[axis])
        elif node.op_type == "Equal":
            other = node.input[1 - index]
            if other in scalars:
                compared.add(scalars[other])
    if rows:
        return ValueHint(f"indexes a table of {min(rows)} rows through Gather", 0, min(rows))
    if compared:
        return ValueHint("compared with these constants", choices=tuple(sorted(compared)))
    return ValueHint("no Gather or comparison with constants: 0/1, as masks take", 0, 2)


def _uses(name: str, consumers: dict[str, list[tuple[Any, int]]]) -> Iterator[tuple[Any, int]]:
    """Every (node, input index) that reads ``name`` or a pass-through copy of it."""
    seen, queue = {name}, [name]
    while queue:
        for node, index in consumers.get(queue.pop(), []):
            yield node, index
            if node.op_type in PASS_THROUGH and (index == 0 or node.op_type == "Concat"):
                for out in node.output:
                    if out not in seen:
                        seen.add(out)
                        queue.append(out)


def _all_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _constants(model: Any, nodes: list[Any]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Shapes of constant tensors, and the values of integer scalar constants."""
    from onnx import numpy_helper

    tensors = {t.name: t for t in model.graph.initializer}
    for node in nodes:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                tensors[node.output[0]] = value
    shapes = {name: list(t.dims) for name, t in tensors.items()}
    scalars = {}
    for name, tensor in tensors.items():
        if len(tensor.dims) <= 1 and (not tensor.dims or tensor.dims[0] == 1):
            array = numpy_helper.to_array(tensor)
            if array.dtype.kind in "iu" and array.size == 1:
                scalars[name] = int(array.reshape(()))
    return shapes, scalars


def _attribute(node: Any, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)
