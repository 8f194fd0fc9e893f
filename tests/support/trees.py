"""Small tree models of every supported library and task, saved in their safe formats.

Few, shallow trees so gcc stays fast. ``make_tree_model(kind, dest)`` trains the model on
seeded data and writes it where ``neofleet compile --framework FRAMEWORK`` reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 6


@dataclass(frozen=True)
class TreeCase:
    name: str
    framework: str
    task: str  # binary | multiclass | regression
    filename: str
    train: Callable[[np.ndarray, Path], Any]


def training_data(task: str, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((rows, FEATURES)).astype(np.float32)
    score = x[:, 0] + 0.5 * x[:, 1] * x[:, 2] - x[:, 3]
    if task == "binary":
        return x, (score > 0).astype(np.int64)
    if task == "multiclass":
        return x, np.digitize(score, [-0.7, 0.7]).astype(np.int64)
    return x, (3.0 * score + rng.standard_normal(rows)).astype(np.float32)


def _xgb(params: dict[str, Any], rounds: int = 6) -> Callable[[np.ndarray, Path], Any]:
    def train(_: np.ndarray, dest: Path) -> None:
        import xgboost as xgb

        task = ("regression" if params["objective"].startswith("reg")
                else "multiclass" if params["objective"].startswith("multi") else "binary")
        x, y = training_data(task)
        booster = xgb.train({"max_depth": 3, "nthread": 1, **params}, xgb.DMatrix(x, y), rounds)
        booster.save_model(str(dest))
    return train


def _lgb(params: dict[str, Any], task: str) -> Callable[[np.ndarray, Path], Any]:
    def train(_: np.ndarray, dest: Path) -> None:
        import lightgbm as lgb

        x, y = training_data(task)
        booster = lgb.train({"num_leaves": 7, "verbose": -1, "num_threads": 1, **params},
                            lgb.Dataset(x, y), num_boost_round=5)
        booster.save_model(str(dest))
    return train


def _sk(factory: Callable[[], Any], task: str) -> Callable[[np.ndarray, Path], Any]:
    def train(_: np.ndarray, dest: Path) -> None:
        import skops.io as sio

        x, y = training_data(task)
        sio.dump(factory().fit(x, y), str(dest))
    return train


def _treelite(_: np.ndarray, dest: Path) -> None:
    import treelite

    xgb_file = dest.with_suffix(".json")
    _xgb({"objective": "reg:squarederror"})(_, xgb_file)
    treelite.frontend.load_xgboost_model(str(xgb_file)).serialize(str(dest))
    xgb_file.unlink()


def _sklearn_cases() -> list[TreeCase]:
    from sklearn import ensemble as e

    return [
        TreeCase("sk-rf-binary", "sklearn", "binary", "rf.skops",
                 _sk(lambda: e.RandomForestClassifier(5, max_depth=4, random_state=0),
                     "binary")),
        TreeCase("sk-et-multiclass", "sklearn", "multiclass", "et.skops",
                 _sk(lambda: e.ExtraTreesClassifier(5, max_depth=4, random_state=0),
                     "multiclass")),
        TreeCase("sk-gb-binary", "sklearn", "binary", "gb.skops",
                 _sk(lambda: e.GradientBoostingClassifier(n_estimators=5, max_depth=3,
                                                          random_state=0), "binary")),
        TreeCase("sk-gb-regression", "sklearn", "regression", "gbr.skops",
                 _sk(lambda: e.GradientBoostingRegressor(n_estimators=5, max_depth=3,
                                                         random_state=0), "regression")),
        TreeCase("sk-hgb-multiclass", "sklearn", "multiclass", "hgb.skops",
                 _sk(lambda: e.HistGradientBoostingClassifier(max_iter=4, max_depth=3,
                                                              random_state=0), "multiclass")),
        TreeCase("sk-hgb-regression", "sklearn", "regression", "hgbr.skops",
                 _sk(lambda: e.HistGradientBoostingRegressor(max_iter=4, max_depth=3,
                                                             random_state=0), "regression")),
        TreeCase("sk-rf-regression", "sklearn", "regression", "rfr.skops",
                 _sk(lambda: e.RandomForestRegressor(5, max_depth=4, random_state=0),
                     "regression")),
    ]


def tree_cases() -> list[TreeCase]:
    return [
        TreeCase("xgb-binary", "xgboost", "binary", "xgb-binary.json",
                 _xgb({"objective": "binary:logistic"})),
        TreeCase("xgb-multiclass", "xgboost", "multiclass", "xgb-multi.ubj",
                 _xgb({"objective": "multi:softprob", "num_class": 3})),
        TreeCase("xgb-softmax", "xgboost", "multiclass", "xgb-softmax.json",
                 _xgb({"objective": "multi:softmax", "num_class": 3})),
        TreeCase("xgb-regression", "xgboost", "regression", "xgb-reg.json",
                 _xgb({"objective": "reg:squarederror"})),
        TreeCase("lgb-binary", "lightgbm", "binary", "lgb-binary.txt",
                 _lgb({"objective": "binary"}, "binary")),
        TreeCase("lgb-multiclass", "lightgbm", "multiclass", "lgb-multi.txt",
                 _lgb({"objective": "multiclass", "num_class": 3}, "multiclass")),
        TreeCase("lgb-regression", "lightgbm", "regression", "lgb-reg.txt",
                 _lgb({"objective": "regression"}, "regression")),
        *_sklearn_cases(),
        TreeCase("treelite-regression", "treelite", "regression", "model.tl", _treelite),
    ]


def make_tree_model(case: TreeCase, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / case.filename
    case.train(np.empty(0), dest)
    return dest


def library_predict(case: TreeCase, model: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """What the source library itself predicts: ``values`` and (classifiers) ``label``."""
    if case.framework == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster(model_file=str(model))
        if case.name == "xgb-softmax":
            return {"label": booster.inplace_predict(x).astype(np.int64)}
        return _with_label(case, booster.inplace_predict(x))
    if case.framework == "lightgbm":
        import lightgbm as lgb

        return _with_label(case, lgb.Booster(model_file=str(model)).predict(x))
    if case.framework == "sklearn":
        import skops.io as sio

        estimator = sio.load(str(model), trusted=sio.get_untrusted_types(file=str(model)))
        if case.task == "regression":
            return {"values": estimator.predict(x)}
        return {"values": estimator.predict_proba(x),
                "label": np.searchsorted(estimator.classes_, estimator.predict(x))}
    import treelite

    values = treelite.gtil.predict(treelite.Model.deserialize(str(model)), x)
    return {"values": values.reshape(len(x))}


def _with_label(case: TreeCase, values: np.ndarray) -> dict[str, np.ndarray]:
    if case.task == "regression":
        return {"values": values}
    label = (values > 0.5) if values.ndim == 1 else values.argmax(axis=1)
    return {"values": values, "label": label.astype(np.int64)}
