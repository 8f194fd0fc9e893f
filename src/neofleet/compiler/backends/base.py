"""The one interface every compile backend implements."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from neofleet.compiler.ingest.source import SourceModel
from neofleet.compiler.targets import Target

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildOptions:
    tuning_trials: int = 0
    tuning_db_root: Path | None = None
    host_can_run: bool = False
    toolchain_timeout_s: float = 900.0
    progress: Progress = field(default=lambda _: None)
    # the target's compiler options (--compiler-option KEY=VALUE, compilerOptions): each
    # backend reads its own keys and ignores the others'
    compiler_options: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Artifact:
    """A built, not yet verified, candidate: the files a bundle will hold."""

    backend: str
    files: dict[str, Path]
    artifact: str
    options: dict[str, Any]
    versions: dict[str, str]
    graph: dict[str, Any]
    build_seconds: float = 0.0


class Backend(Protocol):
    name: str

    def not_applicable(self, source: SourceModel, target: Target) -> str | None:
        """Why this backend cannot build ``source`` for ``target``, or None if it can."""

    def build(self, source: SourceModel, target: Target, workdir: Path,
              options: BuildOptions) -> Artifact: ...
