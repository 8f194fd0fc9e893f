"""Load a tree model file with its own library (never unpickling) and into Treelite.

The libraries parse the file in native code, and some abort the process on a corrupt
file (LightGBM does on a truncated text model), so ``preflight`` first loads it in a
child process (``python -m neofleet.compiler.ingest.tree_formats FRAMEWORK FILE``): a
crash there is a ``ModelLoadError`` naming the signal, and the compiler keeps running.

One loader per source format. Each returns a ``LoadedTrees``: the Treelite model the
backend compiles, and the source library's own predict, which candidates are verified
against. XGBoost reads its JSON/UBJSON, LightGBM its text format, scikit-learn models
come as skops files (only the estimator types below are trusted; anything else in the
file is refused by name), Treelite checkpoints are Treelite's own binary format.
"""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.compiler.errors import BackendUnavailableError, ModelLoadError

Predict = Callable[[np.ndarray], dict[str, np.ndarray]]
"""Source predictions: ``values`` (probabilities or predictions as the library gives
them) and, for classifiers, ``label`` (class index) when the library decides it."""

SKLEARN_ESTIMATORS = (
    "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier",
    "ExtraTreesRegressor", "GradientBoostingClassifier", "GradientBoostingRegressor",
    "HistGradientBoostingClassifier", "HistGradientBoostingRegressor",
)
# Types skops does not trust by default that a supported ensemble legitimately contains.
SKOPS_ALLOWED = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.IdentityLink", "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit", "sklearn._loss.link.Interval",
    "sklearn._loss.loss.HalfSquaredError", "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss", "sklearn._loss.loss.AbsoluteError",
    "sklearn._loss.loss.PinballLoss", "sklearn._loss.loss.HuberLoss",
    "sklearn._loss.loss.HalfPoissonLoss", "sklearn._loss.loss.HalfGammaLoss",
    "sklearn._loss._loss.CyHalfSquaredError", "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss", "sklearn._loss._loss.CyAbsoluteError",
    "sklearn._loss._loss.CyPinballLoss", "sklearn._loss._loss.CyHuberLoss",
    "sklearn._loss._loss.CyHalfPoissonLoss", "sklearn._loss._loss.CyHalfGammaLoss",
    "sklearn.dummy.DummyClassifier", "sklearn.dummy.DummyRegressor",
    *(f"sklearn.ensemble.{name}" for name in SKLEARN_ESTIMATORS),
    "sklearn.tree._classes.DecisionTreeRegressor", "sklearn.tree._classes.ExtraTreeRegressor",
    "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.ExtraTreeClassifier",
    "numpy.random._mt19937.MT19937", "numpy.random.mtrand.RandomState",
    "builtins.slice",
})


@dataclass
class LoadedTrees:
    model: Any  # treelite.Model
    library: str
    library_version: str
    predict: Predict
    classes: list[Any] | None = None
    supports_missing: bool = True


def load_xgboost(path: Path) -> LoadedTrees:
    xgb, treelite = _module("xgboost"), _module("treelite")
    raw = path.read_bytes()
    # JSON: '{' then whitespace or a quote; UBJSON: '{' then a type marker ('L', 'i', ...)
    fmt = "json" if raw[:1] == b"{" and raw[1:2] in {b'"', b" ", b"\n", b"\r", b"\t", b"}"} \
        else "ubjson"
    booster = _call(lambda: xgb.Booster(model_file=bytearray(raw)), "XGBoost", path)
    model = _call(lambda: treelite.frontend.load_xgboost_model(str(path), format_choice=fmt),
                  "Treelite", path)
    objective = _xgb_objective(booster)

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        values = booster.inplace_predict(x)
        if objective == "multi:softmax":
            margin = booster.inplace_predict(x, predict_type="margin")
            shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
            return {"values": shifted / shifted.sum(axis=1, keepdims=True),
                    "label": values.astype(np.int64)}
        return {"values": values}

    return LoadedTrees(model, "xgboost", xgb.__version__, predict)


def _xgb_objective(booster: Any) -> str:
    try:
        return str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    except (KeyError, ValueError):
        return "unknown"


def load_lightgbm(path: Path) -> LoadedTrees:
    lgb, treelite = _module("lightgbm"), _module("treelite")
    booster = _call(lambda: lgb.Booster(model_file=str(path)), "LightGBM", path)
    model = _call(lambda: treelite.frontend.load_lightgbm_model(str(path)), "Treelite", path)
    return LoadedTrees(model, "lightgbm", lgb.__version__,
                       lambda x: {"values": np.asarray(booster.predict(x, num_threads=1))})


def load_sklearn(path: Path) -> LoadedTrees:
    skops_io, sklearn = _module("skops.io"), _module("sklearn")
    treelite = _module("treelite")
    untrusted = _call(lambda: skops_io.get_untrusted_types(file=str(path)), "skops", path)
    refused = sorted(set(untrusted) - SKOPS_ALLOWED)
    if refused:
        raise ModelLoadError(f"{path.name} contains types neofleet does not load: "
                             f"{', '.join(refused)}; supported estimators: "
                             f"{', '.join(SKLEARN_ESTIMATORS)}")
    estimator = _call(lambda: skops_io.load(str(path), trusted=list(untrusted)), "skops", path)
    kind = type(estimator).__name__
    if kind not in SKLEARN_ESTIMATORS or not type(estimator).__module__.startswith("sklearn."):
        raise ModelLoadError(f"{path.name} holds a {kind}; supported scikit-learn estimators: "
                             f"{', '.join(SKLEARN_ESTIMATORS)}")
    model = _call(lambda: treelite.sklearn.import_model(estimator), "Treelite", path)
    classes = getattr(estimator, "classes_", None)

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        if classes is None:
            return {"values": np.asarray(estimator.predict(x))}
        label = np.searchsorted(classes, estimator.predict(x)).astype(np.int64)
        return {"values": np.asarray(estimator.predict_proba(x)), "label": label}

    return LoadedTrees(model, "scikit-learn", sklearn.__version__, predict,
                       classes=None if classes is None else classes.tolist(),
                       supports_missing=False)


def load_treelite(path: Path) -> LoadedTrees:
    treelite = _module("treelite")
    model = _call(lambda: treelite.Model.deserialize(str(path)), "Treelite", path)
    gtil = treelite.gtil

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        values = np.asarray(gtil.predict(model, x))
        return {"values": values.reshape(values.shape[0], -1)}

    return LoadedTrees(model, "treelite", treelite.__version__, predict)


LOADERS: dict[str, Callable[[Path], LoadedTrees]] = {
    "xgboost": load_xgboost, "lightgbm": load_lightgbm, "sklearn": load_sklearn,
    "treelite": load_treelite,
}


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise BackendUnavailableError(f"loading this model needs {name.split('.')[0]}: "
                                      "pip install 'neofleet[compiler]'") from exc


def _call(load: Callable[[], Any], library: str, path: Path) -> Any:
    try:
        return load()
    except ModelLoadError:
        raise
    except Exception as exc:  # each library raises its own types for a bad file
        detail = str(exc).strip().splitlines()
        raise ModelLoadError(f"{library} cannot read {path.name}: "
                             f"{detail[-1] if detail else type(exc).__name__}") from exc


def preflight(path: Path, framework: str, timeout_s: float = 300.0) -> None:
    """Load ``path`` in a child process first; raise ModelLoadError if that fails or dies."""
    command = [sys.executable, "-m", "neofleet.compiler.ingest.tree_formats", framework,
               str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(f"reading {path.name} took longer than {timeout_s:.0f} s") from exc
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ModelLoadError(f"the {framework} parser crashed ({name}) reading {path.name}: "
                             "the file is corrupt or truncated")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0 or not report.get("ok"):
        raise ModelLoadError(report.get("error") or f"reading {path.name} failed "
                             f"(exit {done.returncode})")


def _main(argv: list[str]) -> int:
    framework, path = argv
    try:
        LOADERS[framework](Path(path))
    except (ModelLoadError, BackendUnavailableError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return 1
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
