"""requirements.lock is what every machine installs: the venv the tests run in, the
emulated aarch64 Python and the images all take their versions from it."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock(name: str = "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version and " " not in line, f"not an exact pin: {line!r}"
            pins[_normal(package)] = version
    return pins


def _aarch64_names(array: str) -> list[str]:
    script = (ROOT / "scripts" / "setup-aarch64-python.sh").read_text()
    block = re.search(rf"^{array}=\((.*?)^\)", script, re.M | re.S)
    assert block is not None, array
    return block.group(1).split()


def test_the_test_environment_is_exactly_the_lock() -> None:
    installed = {_normal(d.metadata["Name"]): d.version.split("+")[0]
                 for d in importlib.metadata.distributions()}
    differ = {name: (version, installed.get(name)) for name, version in _lock().items()
              if installed.get(name) != version}
    assert differ == {}, "installed versions differ from requirements.lock (lock, installed)"


def test_every_dependency_of_neofleet_is_locked() -> None:
    lock = _lock()
    requires = importlib.metadata.requires("neofleet") or []
    names = {_normal(re.split(r"[\s\[<>=!~;(]", r, maxsplit=1)[0]) for r in requires
             if "tensorrt" not in r}                     # the GPU extra is NVIDIA's index
    assert sorted(names - set(lock) - {"neofleet"}) == []


def test_pyproject_pins_agree_with_the_lock() -> None:
    lock = _lock()
    pinned = re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^";\s]+)"',
                        (ROOT / "pyproject.toml").read_text())
    assert pinned, "pyproject.toml pins nothing?"
    for name, version in pinned:
        assert lock.get(_normal(name)) == version, name


def test_the_emulated_aarch64_python_takes_every_version_from_the_lock() -> None:
    lock = _lock()
    names = [*_aarch64_names("WHEEL_NAMES"), *_aarch64_names("SERVE_WHEEL_NAMES"),
             "apache-tvm"]
    assert {"uvicorn", "starlette", "oras", "orjson", "click", "numpy"} <= set(names)
    assert sorted(n for n in names if _normal(n) not in lock) == []
    script = (ROOT / "scripts" / "setup-aarch64-python.sh").read_text()
    assert not re.search(r"\b[a-z][a-z0-9_.-]*==[0-9]", script), "a version pinned in the script"


def test_the_built_aarch64_environment_holds_the_locked_versions() -> None:
    home = Path(os.environ.get("NEOFLEET_AARCH64_PYTHON",
                               Path.home() / ".cache" / "neofleet" / "aarch64-python"))
    versions = home / "versions.txt"
    assert versions.exists(), f"{versions} missing: run scripts/install.sh"
    lock = _lock()
    wheels = [line.split()[1] for line in versions.read_text().splitlines()
              if line.startswith("wheel ")]
    assert wheels
    for wheel in wheels:                 # name-version-...whl, names with _ for -
        name, version = wheel.split("-")[:2]
        assert lock[_normal(name)] == version, wheel


def test_the_lock_script_writes_what_the_lock_holds(tmp_path: Path) -> None:
    """freeze-lock.sh over the test environment reproduces requirements.lock (so the lock
    on main is a generated file, not an edited one)."""
    import sys

    out = subprocess.run(["bash", str(ROOT / "scripts" / "freeze-lock.sh"), sys.executable],
                         capture_output=True, text=True, check=True).stdout
    frozen = {_normal(line.split("==")[0]): line.split("==")[1]
              for line in out.splitlines() if "==" in line and not line.startswith("#")}
    assert {k: v for k, v in frozen.items() if k in _lock()} == _lock()


@pytest.mark.parametrize("dockerfile", ["runtime-image/Dockerfile", "compiler-image/Dockerfile",
                                        "compiler-image/Dockerfile.gpu", "operator/Dockerfile"])
def test_the_documented_image_builds_use_the_lock(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert "requirements.lock" in text and "-c requirements.lock" in text
