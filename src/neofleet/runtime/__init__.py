"""The neofleet runtime: load a verified bundle and run it, DLR style.

``fetch → verify → backends → serve``: this package never imports the compiler, TVM's
compiler library or torch. Backends are chosen by the bundle's manifest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neofleet.runtime.model import DLRModel

__all__ = ["DLRModel"]


def __getattr__(name: str) -> Any:
    if name == "DLRModel":
        from neofleet.runtime.model import DLRModel

        return DLRModel
    raise AttributeError(name)
