"""From a tree ensemble's raw scores to the bundle's outputs (pure numpy).

Both prediction paths of the tree backend produce *margins*: per row, the sum (or the
average) of the trees' leaf values plus the base scores, laid out as
``num_target * num_class`` columns, exactly what TL2cgen's ``predict(..., pred_margin=1)``
writes. ``postprocess`` applies Treelite's postprocessor (the same functions, named as
Treelite names them), and ``task_outputs`` turns the result into what the bundle serves:

- classifiers: ``probabilities`` (rows x classes; a boosted binary model's single
  probability p becomes ``[1 - p, p]``, a forest's two class columns stay as they are)
  and ``label`` (int64 index into the recorded ``classes``; ``p > 0.5`` for a single
  probability, argmax otherwise, as XGBoost, LightGBM and scikit-learn decide);
- regressors and rankers: ``predictions`` (rows, or rows x targets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from neofleet.runtime.errors import IncompatibleBundleError

TASKS = ("binary", "multiclass", "regression")
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class TreeTask:
    """What ``compiled.meta`` records about a tree ensemble (``backend_options.tree``)."""

    task: str
    num_feature: int
    num_target: int
    num_class: int
    postprocessor: str
    sigmoid_alpha: float = 1.0
    ratio_c: float = 1.0

    @classmethod
    def from_options(cls, tree: dict[str, Any]) -> TreeTask:
        try:
            task = cls(task=str(tree["task"]), num_feature=int(tree["num_feature"]),
                       num_target=int(tree["num_target"]), num_class=int(tree["num_class"]),
                       postprocessor=str(tree["postprocessor"]),
                       sigmoid_alpha=float(tree.get("sigmoid_alpha", 1.0)),
                       ratio_c=float(tree.get("ratio_c", 1.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleBundleError(f"the bundle's tree description is incomplete: "
                                          f"{exc!r}") from exc
        if task.task not in TASKS:
            raise IncompatibleBundleError(f"unknown tree task {task.task!r}; known: "
                                          f"{', '.join(TASKS)}")
        if task.postprocessor not in POSTPROCESSORS:
            raise IncompatibleBundleError(f"unknown postprocessor {task.postprocessor!r}; "
                                          f"known: {', '.join(POSTPROCESSORS)}")
        return task

    @property
    def width(self) -> int:
        """Columns of the raw margin: num_target * num_class."""
        return self.num_target * self.num_class

    def output_names(self) -> list[str]:
        return ["predictions"] if self.task == "regression" else ["probabilities", "label"]

    def output_shapes(self) -> list[list[int]]:
        if self.task == "regression":
            return [[-1]] if self.num_target == 1 else [[-1, self.num_target]]
        return [[-1, self.classes], [-1]]

    @property
    def classes(self) -> int:
        return 2 if self.task == "binary" else self.num_class


def _sigmoid(x: Array, task: TreeTask) -> Array:
    out: Array = 1.0 / (1.0 + np.exp(-task.sigmoid_alpha * x))
    return out


def _softmax(x: Array, task: TreeTask) -> Array:
    grouped = x.reshape(x.shape[0], task.num_target, task.num_class)
    shifted = np.exp(grouped - grouped.max(axis=2, keepdims=True))
    out: Array = (shifted / shifted.sum(axis=2, keepdims=True)).reshape(x.shape)
    return out


POSTPROCESSORS: dict[str, Callable[[Array, TreeTask], Array]] = {
    "identity": lambda x, _: x,
    "identity_multiclass": lambda x, _: x,
    "signed_square": lambda x, _: np.sign(x) * x * x,
    "hinge": lambda x, _: (x > 0).astype(x.dtype),
    "sigmoid": _sigmoid,
    "multiclass_ova": _sigmoid,
    "softmax": _softmax,
    "exponential": lambda x, _: np.exp(x),
    "exponential_standard_ratio": lambda x, t: np.exp2(-x / t.ratio_c),
    "logarithm_one_plus_exp": lambda x, _: np.log1p(np.exp(x)),
}


def postprocess(margin: Array, task: TreeTask) -> Array:
    """Apply the model's postprocessor to raw margins of shape (rows, width)."""
    with np.errstate(over="ignore"):
        return POSTPROCESSORS[task.postprocessor](margin, task).astype(margin.dtype, copy=False)


def task_outputs(values: Array, task: TreeTask) -> list[Array]:
    """The bundle's outputs from postprocessed values of shape (rows, width)."""
    if task.task == "regression":
        return [values[:, 0].copy() if task.num_target == 1 else values[:, ::task.num_class]]
    if task.task == "binary" and task.num_class == 1:
        p = values[:, 0]
        probabilities = np.stack([1.0 - p, p], axis=1).astype(values.dtype, copy=False)
        return [probabilities, (p > 0.5).astype(np.int64)]
    probabilities = values[:, :task.classes]
    return [np.ascontiguousarray(probabilities), probabilities.argmax(axis=1).astype(np.int64)]
