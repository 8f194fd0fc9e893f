"""The guest arm64 nodes' ``neofleet-runtime`` containers run on: the emulated aarch64 CPython.

``qemu_guest("arm64")`` is ``qemu-aarch64-static -L <sysroot> <sysroot>/usr/bin/python3.11``
with PYTHONPATH = a copy of this host's ``neofleet`` package + the emulated site-packages
(``neofleet.emulation``, the same environment the compiler verifies aarch64 bundles on),
so an aarch64 bundle is served by aarch64 code. When qemu or that environment (with what
``neofleet serve`` imports) is missing, it raises ``CreateContainerConfigError`` saying to
run ``scripts/setup-aarch64-python.sh``: the pod never falls back to this machine's CPU.
"""

from __future__ import annotations

from neofleet.emulation import (
    QEMU,
    SERVE_MODULES,
    SETUP_HINT,
    EmulatorUnavailable,
    guest_argv,
    guest_python_env,
    locate_emulator,
    staged_package,
)
from neofleet.sandbox.agent.podplan import Guest
from neofleet.sandbox.errors import PodSpecError

EMULATED_ARCH = "arm64"


def qemu_guest(arch: str) -> Guest:
    """The emulated Python for ``arch`` nodes; raises PodSpecError when it is unusable."""
    if arch != EMULATED_ARCH:
        raise PodSpecError("CreateContainerConfigError",
                           f"the runtime on this {arch} node needs an emulator of its CPU; "
                           f"the sandbox emulates {EMULATED_ARCH} only")
    try:
        emulator = locate_emulator(SERVE_MODULES)
    except EmulatorUnavailable as exc:
        raise PodSpecError("CreateContainerConfigError",
                           f"on this {arch} node neofleet-runtime runs under {QEMU} with the "
                           f"emulated aarch64 Python, which is not usable: {exc}") from exc
    try:
        package_root = staged_package(emulator.home)
    except OSError as exc:
        raise PodSpecError("CreateContainerConfigError",
                           f"cannot copy the neofleet package for the emulated aarch64 Python "
                           f"into {emulator.home} ({exc}); {SETUP_HINT} as the agent's user "
                           "or set NEOFLEET_AARCH64_PYTHON to a writable one") from exc
    return Guest(python=tuple(guest_argv(emulator)),
                 env=guest_python_env(emulator, package_root), emulator=QEMU)
