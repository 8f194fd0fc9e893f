"""TVM backend: Relax → LLVM → a Relax VM executable in ``compiled.so``.

Imports the model (``from_exported_program`` for PyTorch, ``from_onnx`` on the prepared,
static-shaped ONNX otherwise), optionally applies MetaSchedule tuning records from a
database kept per target (``tvm_tuning``), compiles with the fusing default pipeline and
exports a shared library, cross-linked with ``aarch64-linux-gnu-g++`` for aarch64. The
bundle also carries the ``libtvm_runtime.so`` of the same TVM release for the target's
architecture, so the runtime needs no TVM installation and can never mix versions.
Tuning needs to time kernels, so it runs only when the host can run the target; other
targets reuse records already in their database.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from neofleet.compiler.backends.base import Artifact, BuildOptions
from neofleet.compiler.errors import BackendBuildError, BackendUnavailableError, ToolchainError
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.targets import Target, host_arch

ARTIFACT = "compiled.so"
RUNTIME_LIBRARY = "libtvm_runtime.so"


class TvmBackend:
    name = "tvm"

    def not_applicable(self, source: SourceModel, target: Target) -> str | None:
        if target.device_type != "cpu":
            return "GPU targets are built by the tvm-cuda backend"
        if source.exported_program is None and source.onnx_path is None:
            return "no form of the model TVM can import"
        if source.exported_program is None and source.graph != "prepared":
            return ("TVM imports only a static-shaped, constant-folded graph, and preparing "
                    "one broke this model: " + "; ".join(source.notes))
        return None

    def build(self, source: SourceModel, target: Target, workdir: Path,
              options: BuildOptions) -> Artifact:
        tvm, relax = _imports()
        start = time.perf_counter()
        tvm_target = tvm.target.Target(target.tvm_target())
        options.progress(f"[{target.name}] tvm: importing the model")
        mod = _import_relax(relax, source)
        mod, tuning = _maybe_tune(mod, tvm_target, target, options)
        options.progress(f"[{target.name}] tvm: compiling for {target.tvm_target()}")
        try:
            executable = tvm.compile(mod, target=tvm_target,
                                     relax_pipeline=relax.get_default_pipeline(tvm_target))
        except Exception as exc:
            raise BackendBuildError(f"tvm.compile failed: {_first_line(exc)}") from exc
        dest = workdir / ARTIFACT
        _export(tvm, executable, dest, target, options)
        return Artifact(
            backend=self.name,
            files={ARTIFACT: dest, RUNTIME_LIBRARY: _runtime_library(tvm, target, options)},
            artifact=ARTIFACT,
            options={"tvm_target": target.tvm_target(), "tuning": tuning,
                     "runtime_library": RUNTIME_LIBRARY},
            versions=_versions(tvm), graph=_graph_summary(executable, source),
            build_seconds=time.perf_counter() - start)


def _imports() -> tuple[Any, Any]:
    try:
        import tvm
        from tvm import relax
    except ImportError as exc:
        raise BackendUnavailableError("the tvm backend needs apache-tvm: "
                                      "pip install 'neofleet[compiler]'") from exc
    return tvm, relax


def _import_relax(relax: Any, source: SourceModel) -> Any:
    try:
        if source.exported_program is not None:
            from tvm.relax.frontend.torch import from_exported_program

            return from_exported_program(source.exported_program, keep_params_as_input=False)
        import onnx
        from tvm.relax.frontend.onnx import from_onnx

        assert source.onnx_path is not None
        model = onnx.load(str(source.onnx_path))
        return from_onnx(model, shape_dict={s.name: s.shape for s in source.inputs},
                         dtype_dict={s.name: s.dtype for s in source.inputs},
                         keep_params_in_input=False)
    except Exception as exc:
        raise BackendBuildError(f"TVM cannot import the model: {_first_line(exc)}") from exc


def _maybe_tune(mod: Any, tvm_target: Any, target: Target,
                options: BuildOptions) -> tuple[Any, dict[str, Any] | None]:
    if options.tuning_db_root is None:
        return mod, None
    trials = options.tuning_trials if options.host_can_run else 0
    if trials == 0 and not _has_database(options.tuning_db_root, target):
        return mod, None
    from neofleet.compiler.backends.tvm_tuning import tune_relax_module

    if options.tuning_trials and not options.host_can_run:
        options.progress(f"[{target.name}] tvm: this host cannot time {target.name} kernels; "
                         "reusing tuning records only")
    mod, report = tune_relax_module(mod, tvm_target, database_root=options.tuning_db_root,
                                    trials=trials, progress=options.progress)
    return mod, {k: v for k, v in vars(report).items() if k != "database_dir"}


def _has_database(root: Path, target: Target) -> bool:
    from neofleet.compiler.backends.tvm_tuning import tuning_database_dir

    return bool(tuning_database_dir(root, target.tvm_target()).is_dir())


def _export(tvm: Any, executable: Any, dest: Path, target: Target,
            options: BuildOptions) -> None:
    kwargs: dict[str, Any] = {}
    if target.cross_toolchain and not options.host_can_run:
        if shutil.which(target.cross_toolchain) is None:
            raise ToolchainError(f"{target.cross_toolchain} not found: apt-get install "
                                 "g++-aarch64-linux-gnu")
        options.progress(f"[{target.name}] tvm: cross-linking with {target.cross_toolchain}")
        kwargs["fcompile"] = tvm.support.cc.cross_compiler(target.cross_toolchain)
    try:
        executable.export_library(str(dest), **kwargs)
    except Exception as exc:
        raise BackendBuildError(f"export_library failed: {_first_line(exc)}") from exc


def _runtime_library(tvm: Any, target: Target, options: BuildOptions) -> Path:
    """The libtvm_runtime.so of this TVM build, for the target's architecture.

    Native: the one inside the installed apache-tvm wheel. aarch64: the one from the
    aarch64 wheel of the same release, kept by scripts/setup-aarch64-python.sh.
    """
    if options.host_can_run or target.arch == host_arch():
        path = Path(tvm.__file__).parent / "lib" / RUNTIME_LIBRARY
    else:
        from neofleet.emulation import aarch64_python_home

        path = aarch64_python_home() / "lib" / RUNTIME_LIBRARY
    if not path.is_file():
        raise ToolchainError(f"no {target.arch} {RUNTIME_LIBRARY} at {path}: "
                             "run scripts/setup-aarch64-python.sh")
    return path


def _versions(tvm: Any) -> dict[str, str]:
    import tvm_ffi

    info = tvm.support.libinfo()
    return {"tvm": str(tvm.__version__), "tvm_ffi": str(tvm_ffi.__version__),
            "llvm": str(info.get("LLVM_VERSION", "unknown"))}


def _graph_summary(executable: Any, source: SourceModel) -> dict[str, Any]:
    kernels = sorted(_kernel_names(executable))
    return {"backend": "tvm", "source_ops": source.ops, "kernels": len(kernels),
            "kernel_names": kernels}


def _kernel_names(executable: Any) -> list[str]:
    """The compiled kernels: the VM's globals that are neither ``main`` nor builtins."""
    for line in str(executable.stats()).splitlines():
        head, _, rest = line.strip().partition(":")
        if head.startswith("Globals"):
            names = [n.strip() for n in rest.strip().strip("[]").split(",")]
            return [n for n in names if n and n != "main" and not n.startswith("vm.")]
    return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"
