"""Layers: the runtime never imports the compiler, TVM's compiler or torch; importing
neofleet pulls in nothing heavy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "neofleet"
FORBIDDEN = {
    # the operator reads the target catalogue (plain data) and nothing else of the compiler
    "operator": ("neofleet.runtime", "neofleet.sandbox", "neofleet.compiler.pipeline",
                 "neofleet.compiler.backends", "neofleet.compiler.ingest", "tvm", "torch",
                 "onnx", "onnxruntime"),
    "api": ("kopf", "kubernetes", "neofleet.operator", "neofleet.compiler", "neofleet.runtime"),
    "sandbox": ("neofleet.operator", "neofleet.compiler", "neofleet.runtime"),
    "runtime": ("neofleet.compiler", "neofleet.cli", "tvm", "torch", "onnx"),
    "bundle": ("neofleet.compiler", "neofleet.runtime", "neofleet.cli", "tvm", "torch", "onnx",
               "onnxruntime"),
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upper_layers(package: str) -> None:
    offenders = []
    for path in sorted((SRC / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package]):
                offenders.append(f"{path.relative_to(SRC)} imports {name}")
    assert offenders == []


def test_planners_import_neither_kopf_nor_kubernetes() -> None:
    for path in sorted((SRC / "operator" / "planning").rglob("*.py")):
        assert not {n.split(".")[0] for n in _imports(path)} & {"kopf", "kubernetes"}, path


def test_importing_neofleet_and_the_cli_is_light() -> None:
    code = ("import sys, neofleet, neofleet.cli, neofleet.runtime, neofleet.bundle, "
            "neofleet.compiler.pipeline\n"
            "heavy = sorted(m for m in ('tvm', 'tvm_ffi', 'torch', 'onnx', 'onnxruntime', "
            "'oras') if m in sys.modules)\n"
            "print(','.join(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == ""


def test_runtime_extra_installs_no_compiler() -> None:
    import re
    import tomllib

    doc = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())
    runtime = doc["project"]["optional-dependencies"]["runtime"]
    names = {re.split(r"[<>=\[ ;]", req, maxsplit=1)[0].lower() for req in runtime}
    assert not names & {"apache-tvm", "torch", "onnx", "onnxscript", "xgboost", "psutil"}
    assert {"apache-tvm-ffi", "onnxruntime"} <= names


def test_the_shared_emulation_module_belongs_to_no_layer() -> None:
    """neofleet.emulation serves the compiler and the sandbox: it imports neither (nor any
    other layer), only the standard library and neofleet's root."""
    layers = ("neofleet.bundle", "neofleet.compiler", "neofleet.runtime", "neofleet.sandbox",
              "neofleet.api", "neofleet.operator", "neofleet.cli")
    names = _imports(SRC / "emulation.py")
    assert not [n for n in names if any(n == bad or n.startswith(bad + ".") for bad in layers)]
    assert {n.split(".")[0] for n in names} <= set(sys.stdlib_module_names) | {"neofleet"}
