"""TL2cgen backend: a Treelite model → C → one shared library for the target.

The library holds TL2cgen's generated if/else code (split into ``parallel_comp``
translation units for large ensembles, branches annotated from ``--sample-data`` when
given) behind ``neofleet_rows_predict``, plus the blocked forest kernel
(``forest_kernel.c``) whose node table is written to ``forest.npz``. Each translation unit
is compiled by its own gcc process (native, or ``aarch64-linux-gnu-gcc`` for aarch64),
in parallel, each bounded by ``BuildOptions.toolchain_timeout_s``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from neofleet.compiler.backends.base import Artifact, BuildOptions
from neofleet.compiler.backends.forest import ForestUnsupported, forest_arrays
from neofleet.compiler.errors import BackendBuildError, BackendUnavailableError, ToolchainError
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.targets import Target, host_arch

ARTIFACT = "compiled.so"
FOREST = "forest.npz"
TREES_PER_UNIT = 50
# Rows from which the forest kernel is used when the compile host cannot time the target
# (aarch64 from x86): the crossover measured on x86 hosts, see README.
DEFAULT_CROSSOVER_ROWS = 8

_ROWS_WRAPPER = """\
#include "header.h"
/* neofleet: TL2cgen's predict() over a batch of rows, margins only (the runtime applies
 * the postprocessor). NaN becomes TL2cgen's "missing". */
void neofleet_rows_predict(const {real}* X, int64_t rows, int32_t nfeat, {leaf}* out) {{
  union Entry* row = (union Entry*)malloc(sizeof(union Entry) * (size_t)nfeat);
  const int32_t width = N_TARGET * MAX_N_CLASS;
  if (row == NULL) return;
  for (int64_t r = 0; r < rows; ++r) {{
    for (int32_t f = 0; f < nfeat; ++f) {{
      const {real} x = X[r * nfeat + f];
      if (isnan(x)) {{ row[f].missing = -1; }} else {{ row[f].fvalue = x; }}
    }}
    predict(row, 1, out + r * width);
  }}
  free(row);
}}
"""


class Tl2cgenBackend:
    name = "tl2cgen"

    def not_applicable(self, source: SourceModel, target: Target) -> str | None:
        if source.tree_model is None:
            return "tl2cgen compiles tree ensembles only"
        if target.device_type != "cpu":
            return "tl2cgen builds CPU bundles only"
        return None

    def build(self, source: SourceModel, target: Target, workdir: Path,
              options: BuildOptions) -> Artifact:
        tl2cgen, treelite = _imports()
        assert source.tree is not None
        start = time.perf_counter()
        units = max(1, min(64, source.tree["num_tree"] // TREES_PER_UNIT))
        params: dict[str, Any] = {"parallel_comp": units} if units > 1 else {}
        annotated = _annotate(tl2cgen, source, workdir, params)
        code = workdir / "code"
        try:
            with _native_stdout_to_stderr():   # its C++ logs to stdout: --json owns stdout
                tl2cgen.generate_c_code(source.tree_model, dirpath=str(code), params=params)
        except Exception as exc:
            raise BackendBuildError(f"tl2cgen could not generate C code: {exc}") from exc
        forest, unsupported = _write_forest(source, workdir / FOREST)
        sources = _sources(code, source.tree)
        compiler = _compiler(target)
        options.progress(f"[{target.name}] tl2cgen: compiling {len(sources)} C files with "
                         f"{compiler[0]}")
        _compile_library(compiler, sources, workdir / ARTIFACT, options.toolchain_timeout_s)
        files = {ARTIFACT: workdir / ARTIFACT}
        if forest is not None:
            files[FOREST] = forest
        backend_options: dict[str, Any] = {
            "tree": source.tree, "parallel_comp": units, "annotated": annotated,
            "variants": ["rows", "forest"] if forest is not None else ["rows"],
            "forest": FOREST if forest is not None else None,
            "crossover_rows": DEFAULT_CROSSOVER_ROWS if forest is not None else None,
            "crossover": "default (not measured)" if forest is not None else "rows path only",
            "compiler_flags": compiler[1:]}
        if unsupported:
            backend_options["forest_unsupported"] = unsupported
        return Artifact(backend=self.name, files=files, artifact=ARTIFACT,
                        options=backend_options,
                        versions={"tl2cgen": tl2cgen.__version__, "treelite": treelite.__version__,
                                  **_gcc_version(compiler[0])},
                        graph={"backend": self.name, "trees": source.tree["num_tree"],
                               "translation_units": len(sources)},
                        build_seconds=time.perf_counter() - start)


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """File descriptor 1 points at stderr meanwhile: TL2cgen's C++ logger writes a line to
    stdout ("Parallel compilation enabled ..."), which would corrupt ``--json`` output and
    the compile pod's result."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _imports() -> tuple[Any, Any]:
    try:
        import tl2cgen
        import treelite
    except ImportError as exc:
        raise BackendUnavailableError("the tl2cgen backend needs treelite and tl2cgen: "
                                      "pip install 'neofleet[compiler]'") from exc
    return tl2cgen, treelite


def _annotate(tl2cgen: Any, source: SourceModel, workdir: Path, params: dict[str, Any]) -> bool:
    """Branch annotation from the user's sample rows, when given."""
    if source.sample_data is None:
        return False
    path = workdir / "annotation.json"
    data = source.sample_data.astype(source.inputs[0].dtype)
    try:
        tl2cgen.annotate_branch(source.tree_model, tl2cgen.DMatrix(data), path=str(path),
                                nthread=os.cpu_count() or 1, verbose=False)
    except Exception as exc:
        raise BackendBuildError(f"tl2cgen could not annotate branches: {exc}") from exc
    params["annotate_in"] = str(path)
    return True


def _write_forest(source: SourceModel, dest: Path) -> tuple[Path | None, str]:
    assert source.tree is not None
    dump = json.loads(source.tree_model.dump_as_json(pretty_print=False))
    try:
        arrays = forest_arrays(dump, str(source.tree["input_dtype"]))
    except ForestUnsupported as exc:
        return None, f"forest kernel not used: {exc}"
    np.savez(dest, **arrays)  # type: ignore[arg-type]  # read back with allow_pickle=False
    return dest, ""


def _sources(code: Path, tree: dict[str, Any]) -> list[Path]:
    recipe = json.loads((code / "recipe.json").read_text())
    sources = [code / f"{s['name']}.c" for s in recipe["sources"]]
    real = "float" if tree["input_dtype"] == "float32" else "double"
    leaf = "float" if tree["leaf_dtype"] == "float32" else "double"
    wrapper = code / "neofleet_rows.c"
    wrapper.write_text(_ROWS_WRAPPER.format(real=real, leaf=leaf))
    kernel = code / "neofleet_forest.c"
    kernel.write_text(resources.files("neofleet.compiler.backends")
                      .joinpath("forest_kernel.c").read_text())
    return [*sources, wrapper, kernel]


def _compiler(target: Target) -> list[str]:
    """The C compiler and flags for the target: gcc natively, the cross gcc for aarch64."""
    cross = target.arch != host_arch()
    cc = "gcc"
    if cross:
        if not target.cross_toolchain:
            raise ToolchainError(f"no cross toolchain for {target.name}")
        cc = target.cross_toolchain.removesuffix("g++") + "gcc"
    if shutil.which(cc) is None:
        package = "gcc-aarch64-linux-gnu" if cross else "gcc"
        raise ToolchainError(f"{cc} not found: apt-get install {package}")
    flags = ["-O3", "-std=c99", "-fPIC"]
    if target.arch == "x86_64" and target.mcpu:
        flags.append(f"-march={target.mcpu}")
    elif target.arch == "aarch64" and target.mcpu and target.mcpu != "generic":
        flags.append(f"-mcpu={target.mcpu}")
    return [cc, *flags]


def _compile_library(compiler: list[str], sources: list[Path], dest: Path,
                     timeout_s: float) -> None:
    objects = [s.with_suffix(".o") for s in sources]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        jobs = [pool.submit(_run, [*compiler, "-c", str(s), "-o", str(o)], timeout_s)
                for s, o in zip(sources, objects, strict=True)]
        for job in jobs:
            job.result()
    _run([compiler[0], "-shared", "-o", str(dest), *map(str, objects), "-lm"], timeout_s)


def _run(command: list[str], timeout_s: float) -> None:
    """Run a compiler; on timeout kill its whole process group (gcc's cc1 too)."""
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BackendBuildError(f"{Path(command[0]).name} did not finish within "
                                    f"{timeout_s:.0f} s ({Path(command[-1]).name}); use fewer "
                                    "or shallower trees, or a longer --toolchain-timeout") from exc
    if proc.returncode != 0:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        raise BackendBuildError(f"{Path(command[0]).name} failed: "
                                f"{lines[-1] if lines else proc.returncode}")


def _gcc_version(cc: str) -> dict[str, str]:
    done = subprocess.run([cc, "-dumpfullversion"], capture_output=True, text=True, check=False)
    return {"gcc": done.stdout.strip() or "unknown"}
