"""TVM CUDA backend (``tvm-cuda``): Relax → DLight GPU schedules → CUDA → ``compiled.so``.

The model is imported as for the CPU ``tvm`` backend, then compiled for the preset's
``cuda`` target (TVM's own tag values, ``Target.cuda``) with TVM's default CUDA pipeline:
legalize, fuse, then DLight's default GPU rules (``Matmul``, ``GEMV``, ``Reduction``,
``GeneralReduction``, ``Fallback``) schedule every kernel without measuring anything.
The kernels go through ``nvcc`` (``TVM_CUDA_COMPILE_MODE=nvcc``: a fatbin with SASS for the
preset's architecture, no PTX; TVM's default, NVRTC, needs the cuda-python bindings) and
are embedded in the exported library with the host code. No GPU is needed to build.

TVM 0.27 compiles the kernels to machine code at build time only when its CUDA runtime
(``libtvm_runtime_cuda.so``, which registers the module factory) is loaded; otherwise its
codegen keeps the CUDA *source* in the module and the receiver would have to JIT it with
nvcc or NVRTC and the full TVM Python package. That library links the driver,
``libcuda.so.1``, which a host without a GPU does not have. There, like NVIDIA's own link
stubs, a stand-in ``libcuda.so.1`` is built and loaded into the compiler process
(``load_cuda_codegen``): every function returns ``CUDA_ERROR_STUB_LIBRARY``; nothing is
ever run on a device by it. The exported library is then checked to hold a fatbin.

The bundle carries ``compiled.so``, the ``libtvm_runtime.so`` and ``libtvm_runtime_cuda.so``
of this TVM release; the host provides the CUDA driver and the ``libcudart`` that
``libtvm_runtime_cuda.so`` links against (recorded as ``backend_options.cuda.cudart``).

Not done here, each refused with a clear error rather than skipped:
- MetaSchedule tuning: measuring CUDA kernels needs the GPU on the compile host, and the
  tuning module (``tvm_tuning``) drives ``llvm`` targets only.
- Jetson presets (``cuda_build_blocker``): CUDA 13's nvcc has no code generation for
  sm_53/sm_72, and TVM 0.27's CUDA runtime links CUDA 13 while JetPack fixes the CUDA a
  Jetson runs (10.2/11.4/12.x for these presets).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from neofleet.compiler.backends.base import Artifact, BuildOptions
from neofleet.compiler.backends.tvm import (
    ARTIFACT,
    RUNTIME_LIBRARY,
    _first_line,
    _graph_summary,
    _import_relax,
    _imports,
    _versions,
)
from neofleet.compiler.errors import BackendBuildError, BackendUnavailableError, ToolchainError
from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.targets import Target, host_arch

CUDA_RUNTIME_LIBRARY = "libtvm_runtime_cuda.so"
DLIGHT_RULES = ("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")
# The first driver release of CUDA 13.0 (Linux); CUDA 12 needs 525.
_MIN_DRIVER = {13: "580", 12: "525"}


class TvmCudaBackend:
    name = "tvm-cuda"

    def not_applicable(self, source: SourceModel, target: Target) -> str | None:
        if target.device_type != "gpu" or target.cuda is None:
            return "CPU targets are built by the tvm and onnxruntime backends"
        if source.exported_program is None and source.onnx_path is None:
            return "no form of the model TVM can import"
        if source.exported_program is None and source.graph != "prepared":
            return ("TVM imports only a static-shaped, constant-folded graph, and preparing "
                    "one broke this model: " + "; ".join(source.notes))
        return cuda_build_blocker(target, _nvcc_archs(), host_arch())

    def build(self, source: SourceModel, target: Target, workdir: Path,
              options: BuildOptions) -> Artifact:
        assert target.cuda is not None
        tvm, relax = _imports()
        start = time.perf_counter()
        nvcc_version = _nvcc_version()
        _refuse_tuning(target, options)
        tvm_target = tvm.target.Target(target.tvm_target())
        options.progress(f"[{target.name}] tvm-cuda: importing the model")
        mod = _import_relax(relax, source)
        codegen = load_cuda_codegen(tvm, workdir)
        options.progress(f"[{target.name}] tvm-cuda: compiling for {target.cuda.arch} "
                         f"(DLight default GPU schedules, nvcc {nvcc_version})")
        try:
            with _nvcc_mode(), tvm_target:
                executable = tvm.compile(mod, target=tvm_target,
                                         relax_pipeline=relax.get_default_pipeline(tvm_target))
        except Exception as exc:
            raise BackendBuildError(f"tvm.compile for {target.cuda.arch} failed: "
                                    f"{_first_line(exc)}") from exc
        dest = workdir / ARTIFACT
        try:
            executable.export_library(str(dest))
        except Exception as exc:
            raise BackendBuildError(f"export_library failed: {_first_line(exc)}") from exc
        if _FATBIN_MAGIC not in dest.read_bytes():
            raise BackendBuildError("the exported library holds no CUDA fatbin: TVM kept the "
                                    "kernels as source (its CUDA runtime was not loaded)")
        lib_dir = Path(tvm.__file__).parent / "lib"
        cuda_lib = lib_dir / CUDA_RUNTIME_LIBRARY
        if not cuda_lib.is_file():
            raise ToolchainError(f"this apache-tvm has no {CUDA_RUNTIME_LIBRARY} ({lib_dir}): "
                                 "install a wheel built with CUDA")
        cudart = linked_cudart(cuda_lib)
        major = int(cudart.rsplit(".", 1)[1])
        return Artifact(
            backend=self.name,
            files={ARTIFACT: dest, RUNTIME_LIBRARY: lib_dir / RUNTIME_LIBRARY,
                   CUDA_RUNTIME_LIBRARY: cuda_lib},
            artifact=ARTIFACT,
            options={"tvm_target": target.tvm_target(), "tvm_tag": target.cuda.tvm_tag,
                     "runtime_library": RUNTIME_LIBRARY,
                     "cuda_runtime_library": CUDA_RUNTIME_LIBRARY,
                     "schedules": "dlight default GPU rules: " + ", ".join(DLIGHT_RULES),
                     "tuning": None,
                     "cuda": {"arch": target.cuda.arch,
                              "compute_capability": target.compute_capability,
                              "cuda_version": nvcc_version, "cudart": cudart,
                              "min_driver": _MIN_DRIVER.get(major, "unknown"),
                              "kernels": f"nvcc fatbin, SASS for {target.cuda.arch} only "
                                         "(no PTX)", "build_host_driver": codegen}},
            versions={**_versions(tvm), "cuda": nvcc_version},
            graph={**_graph_summary(executable, source), "backend": self.name},
            build_seconds=time.perf_counter() - start)


def cuda_build_blocker(target: Target, nvcc_archs: frozenset[str] | None,
                       compile_host: str) -> str | None:
    """Why ``target`` cannot get a tvm-cuda bundle from this toolchain, or None (pure:
    ``nvcc_archs`` from ``nvcc --list-gpu-arch``, None when there is no nvcc)."""
    assert target.cuda is not None
    compute = "compute_" + target.cuda.arch.removeprefix("sm_").rstrip("a")
    if nvcc_archs is not None and compute not in nvcc_archs:
        lowest = min(nvcc_archs, key=lambda a: int(a.split("_")[1])) if nvcc_archs else "?"
        return (f"{target.name} needs CUDA code for {target.cuda.arch}, and this nvcc cannot "
                f"generate it (its oldest architecture is {lowest}: CUDA 13 dropped Maxwell, "
                f"Pascal and Volta); {target.name} runs JetPack with CUDA "
                f"{target.cuda_version}, so it needs a toolkit and TVM build of that CUDA: "
                "use the tensorrt backend on the device")
    if target.arch == "aarch64":
        return (f"{target.name} runs JetPack, whose CUDA ({target.cuda_version}) is fixed by "
                "the board's L4T release; TVM 0.27's CUDA runtime (libtvm_runtime_cuda.so of "
                "the apache-tvm wheel) links libcudart.so.13, so a bundle built here could not "
                "load there, and no Jetson is at hand to verify one: use the tensorrt backend "
                "on the device")
    if target.arch != compile_host:
        return (f"{target.name}'s host code is {target.arch} and this compile host is "
                f"{compile_host}: build it on an {target.arch} host")
    return None


def _refuse_tuning(target: Target, options: BuildOptions) -> None:
    if not options.tuning_trials:
        return
    from neofleet.runtime.gpu import detect_gpus

    assert target.cuda is not None
    host = detect_gpus()
    raise BackendUnavailableError(
        f"--tuning-trials for {target.name}: MetaSchedule times candidate CUDA kernels on the "
        f"GPU itself, so it needs a {target.cuda.arch} GPU on the compile host (this host has "
        f"{host.describe()}), and this version tunes llvm targets only; compile without "
        "--tuning-trials to get DLight's default GPU schedules")


@contextlib.contextmanager
def _nvcc_mode() -> Iterator[None]:
    """TVM compiles CUDA with NVRTC unless told otherwise; NVRTC needs cuda-python."""
    previous = os.environ.get("TVM_CUDA_COMPILE_MODE")
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TVM_CUDA_COMPILE_MODE", None)
        else:
            os.environ["TVM_CUDA_COMPILE_MODE"] = previous


def _nvcc() -> str:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise ToolchainError("nvcc not found on PATH: the tvm-cuda backend compiles CUDA "
                             "kernels with the CUDA toolkit's nvcc (no GPU needed)")
    return nvcc


def _nvcc_version() -> str:
    text = _run_nvcc("--version")
    match = re.search(r"release (\d+\.\d+)", text)
    if not match:
        raise ToolchainError(f"cannot read the CUDA version from nvcc --version: {text[-200:]}")
    return match[1]


def _nvcc_archs() -> frozenset[str] | None:
    if shutil.which("nvcc") is None:
        return None
    return frozenset(_run_nvcc("--list-gpu-arch").split())


def _run_nvcc(flag: str) -> str:
    try:
        done = subprocess.run([_nvcc(), flag], capture_output=True, text=True, timeout=60,
                              check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolchainError(f"nvcc {flag} failed: {exc}") from exc
    return done.stdout


def linked_cudart(library: Path) -> str:
    """The ``libcudart.so.N`` that TVM's CUDA runtime library was linked against."""
    match = re.search(rb"libcudart\.so\.(\d+)", library.read_bytes())
    if not match:
        raise ToolchainError(f"{library} names no libcudart.so.N")
    return f"libcudart.so.{match[1].decode()}"


_FATBIN_MAGIC = (0xBA55ED50).to_bytes(4, "little")
# The driver functions libtvm_runtime_cuda.so of apache-tvm 0.27 imports; a symbol missing
# from this list is added on the fly (the loader names it).
_DRIVER_SYMBOLS = ["cuDeviceGetName", "cuFuncSetAttribute", "cuGetErrorName",
                   "cuGetErrorString", "cuLaunchKernelEx", "cuModuleGetFunction",
                   "cuModuleLoadData", "cuModuleUnload", "cuTensorMapEncodeTiled", "cuInit",
                   "cuDriverGetVersion", "cuDeviceGetCount", "cuDeviceGet",
                   "cuDeviceGetAttribute"]
_STUB_MARKER = "neofleet_cuda_stub"
_CUDA_ERROR_STUB_LIBRARY = 34


def load_cuda_codegen(tvm: Any, workdir: Path) -> str:
    """Make TVM's CUDA module factory available in this process; say which driver backs
    it: "NVIDIA driver" or "link stub (no NVIDIA driver on this host)"."""
    import tvm_ffi

    if tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is not None:
        return "NVIDIA driver"
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        driver = "NVIDIA driver"
    except OSError:
        _load_driver_stub(workdir)
        driver = "link stub (no NVIDIA driver on this host)"
    library = Path(tvm.__file__).parent / "lib" / CUDA_RUNTIME_LIBRARY
    try:
        ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL)
    except OSError as exc:
        raise ToolchainError(f"cannot load TVM's CUDA runtime {library}: {exc}") from exc
    if tvm_ffi.get_global_func("ffi.Module.create.cuda", allow_missing=True) is None:
        raise ToolchainError(f"{library} loaded but registered no CUDA module factory")
    return driver


def _load_driver_stub(workdir: Path) -> None:
    symbols = list(_DRIVER_SYMBOLS)
    for attempt in range(8):
        stub = _build_driver_stub(workdir / f"cuda-stub-{attempt}", symbols)
        try:
            ctypes.CDLL(str(stub), mode=ctypes.RTLD_GLOBAL)
            return
        except OSError as exc:  # pragma: no cover - only when TVM needs more symbols
            missing = re.search(r"undefined symbol: (cu\w+)", str(exc))
            if not missing:
                raise ToolchainError(f"loading the libcuda link stub failed: {exc}") from exc
            symbols.append(missing[1])
    raise ToolchainError("the libcuda link stub kept missing driver symbols")


def _build_driver_stub(folder: Path, symbols: list[str]) -> Path:
    """A ``libcuda.so.1`` whose every function returns ``CUDA_ERROR_STUB_LIBRARY``."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ToolchainError("no C compiler (cc) to build the libcuda link stub")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "libcuda_stub.c"
    source.write_text(f"int {_STUB_MARKER}(void) {{ return 1; }}\n" + "".join(
        f"int {name}(void) {{ return {_CUDA_ERROR_STUB_LIBRARY}; }}\n" for name in symbols))
    library = folder / "libcuda.so.1"
    try:
        subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1",
                        "-o", str(library), str(source)], check=True, capture_output=True,
                       text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        raise ToolchainError(f"building the libcuda link stub failed: {detail}") from exc
    return library
