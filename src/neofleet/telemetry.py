"""neofleet sends no telemetry, and keeps the libraries it runs from sending theirs.

Two of them would, by default, from a user's machine or cluster:

- ONNX Runtime (1.2x+ Linux wheels) starts Microsoft's 1DS telemetry: it writes a device
  id and an event store under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` at the
  first session unless ``ORT_DISABLE_TELEMETRY`` is set before it is imported;
- OpenVINO sends a usage event to Google Analytics when it is imported (and on every
  ``convert_model``) unless the user opted out, through the ``openvino-telemetry`` package
  it depends on; when that package cannot be imported it uses a stub that sends nothing.

``block_library_telemetry()`` sets the one and makes the other unimportable in this
process (a ``sys.modules`` entry of None). The CLI calls it first thing, so compile,
serve, the probe children and pods inherit it; the backends call it before they import
either library, so ``DLRModel`` users get it too. A user who set ``ORT_DISABLE_TELEMETRY``
themselves keeps their value. ``tests/integration/test_openvino.py`` checks that a compile
leaves nothing under a fresh ``$HOME``.
"""

from __future__ import annotations

import os
import sys


def block_library_telemetry() -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


def openvino_telemetry_blocked() -> bool:
    """False when OpenVINO was imported before the block (its telemetry may have run)."""
    return sys.modules.get("openvino_telemetry", "absent") is None
