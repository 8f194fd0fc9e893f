"""Errors raised while compiling a model into bundles.

    NeofleetError
    └── CompileError
        ├── ModelLoadError          corrupt model, wrong framework, unsafe file
        ├── InputSpecError          an --input declaration is malformed or contradicts the model
        │   └── SampleDataError     --sample-data (spec.verify.sampleData) does not fit the inputs
        ├── ModelRunError           the model itself fails on the samples (names the input
        │                           values and the failing operator)
        ├── CompilerOptionsError    a --compiler-option (compilerOptions) value is malformed
        ├── UnknownTargetError      not in the catalogue
        ├── BackendUnavailableError no backend applies, or its library is missing here
        ├── BackendBuildError       the backend failed to build an artifact
        ├── VerificationError       outputs differ from the reference beyond tolerance
        └── ToolchainError          a cross compiler or emulator is missing or failed

``reason`` on each class is the stable word a compile pod reports.
"""

from __future__ import annotations

from neofleet.errors import NeofleetError


class CompileError(NeofleetError):
    reason = "CompileFailed"


class ModelLoadError(CompileError):
    reason = "InvalidModel"


class InputSpecError(CompileError):
    reason = "InvalidInputs"


class SampleDataError(InputSpecError):
    reason = "InvalidSampleData"


class ModelRunError(CompileError):
    reason = "ModelFailedOnSamples"


class CompilerOptionsError(CompileError):
    reason = "InvalidCompilerOptions"


class UnknownTargetError(CompileError):
    reason = "UnknownTarget"


class BackendUnavailableError(CompileError):
    reason = "BackendUnavailable"


class BackendBuildError(CompileError):
    reason = "BuildFailed"


class VerificationError(CompileError):
    reason = "VerificationFailed"


class ToolchainError(CompileError):
    reason = "ToolchainUnavailable"
