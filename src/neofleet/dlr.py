"""DLR compatibility: code written against neo-ai-dlr runs unchanged.

    import neofleet.dlr as dlr
    model = dlr.DLRModel("compiled_bundle/", "cpu")
    y = model.run({"data": x})[0]
"""

from __future__ import annotations

from neofleet.runtime.model import DLRModel

__all__ = ["DLRModel"]
