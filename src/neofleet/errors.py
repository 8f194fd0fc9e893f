"""The root of every error neofleet raises on purpose.

Each package defines its own branch and draws it in its module docstring:

    NeofleetError
    ├── neofleet.bundle.BundleError
    ├── neofleet.compiler.CompileError
    ├── neofleet.emulation.EmulatorUnavailable
    ├── neofleet.runtime.RuntimeModelError
    └── neofleet.sandbox.errors.SandboxError

Callers at a boundary (the CLI, a compile pod, the operator) catch ``NeofleetError`` and
turn it into a one-line reason; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NeofleetError(Exception):
    """Base class of every deliberate neofleet error.

    ``reason`` is a short, stable, CamelCase word from a finite set, meant for status
    conditions and termination messages; the message is for people.
    """

    reason: str = "Error"

    def __str__(self) -> str:
        return super().__str__() or self.reason
