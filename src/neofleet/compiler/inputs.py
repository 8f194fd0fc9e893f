"""Input declarations (``--input NAME:1x3x224x224:float32``) and how they meet the model.

Pure functions: parsing a declaration and resolving declarations against the inputs a
model says it has. A declaration that contradicts the model is an error that says what
the model actually expects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from neofleet.bundle.meta import TensorSpec
from neofleet.compiler.errors import InputSpecError

DTYPES = ("float32", "float16", "float64", "bfloat16", "int8", "uint8", "int16", "int32",
          "int64", "bool")
MAX_DIM = 1 << 20
MAX_ELEMENTS = 1 << 28


@dataclass(frozen=True)
class InputDecl:
    name: str
    shape: tuple[int, ...]
    dtype: str | None = None

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape)
        return f"{self.name}:{dims}" + (f":{self.dtype}" if self.dtype else "")


@dataclass(frozen=True)
class ModelInput:
    """An input as the model declares it; ``None`` dims are dynamic."""

    name: str
    dims: tuple[int | None, ...]
    dtype: str

    def describe(self) -> str:
        dims = "x".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name}:{dims or 'scalar'}:{self.dtype}"


def parse_input_decl(text: str) -> InputDecl:
    """Parse ``NAME:D0xD1x...[:DTYPE]`` (``NAME::DTYPE`` for a scalar)."""
    parts = text.split(":")
    dtype: str | None = None
    if len(parts) >= 3 and parts[-1] in DTYPES:
        dtype = parts.pop()
    elif len(parts) >= 3 and not _looks_like_dims(parts[-1]):
        raise InputSpecError(f"--input {text!r}: unknown dtype {parts[-1]!r}; "
                             f"use one of {', '.join(DTYPES)}")
    if len(parts) < 2 or not parts[0]:
        raise InputSpecError(f"--input {text!r}: expected NAME:1x3x224x224[:float32]")
    name = ":".join(parts[:-1])
    return InputDecl(name=name, shape=_parse_dims(text, parts[-1]), dtype=dtype)


def _looks_like_dims(text: str) -> bool:
    return all(p.strip().isdigit() for p in text.lower().split("x"))


def _parse_dims(text: str, dims: str) -> tuple[int, ...]:
    if dims == "":
        return ()
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError:
        raise InputSpecError(f"--input {text!r}: dims must look like 1x3x224x224") from None
    check_shape(text, shape)
    return shape


def check_shape(what: str, shape: Sequence[int]) -> None:
    """Reject absurd shapes before anything allocates them."""
    if any(d < 1 or d > MAX_DIM for d in shape):
        raise InputSpecError(f"{what}: every dim must be between 1 and {MAX_DIM}, got "
                             f"{list(shape)}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise InputSpecError(f"{what}: {math.prod(shape)} elements exceed the limit of "
                             f"{MAX_ELEMENTS}")


def resolve_inputs(model: Sequence[ModelInput], decls: Sequence[InputDecl]) -> list[TensorSpec]:
    """Static input specs in the model's order, or an InputSpecError saying why not."""
    expected = ", ".join(m.describe() for m in model)
    by_name = {d.name: d for d in decls}
    if len(by_name) != len(decls):
        raise InputSpecError("an input is declared twice")
    unknown = sorted(set(by_name) - {m.name for m in model})
    if unknown:
        raise InputSpecError(f"the model has no input {unknown[0]!r}; it expects: {expected}")
    return [_resolve_one(m, by_name.get(m.name), expected) for m in model]


def _resolve_one(model: ModelInput, decl: InputDecl | None, expected: str) -> TensorSpec:
    if decl is None:
        if any(d is None for d in model.dims):
            raise InputSpecError(f"input {model.name} has dynamic dims ({model.describe()}); "
                                 f"declare it, e.g. --input {_example(model)}")
        shape = tuple(d for d in model.dims if d is not None)
        check_shape(f"model input {model.name}", shape)
        return TensorSpec(name=model.name, shape=list(shape), dtype=model.dtype)
    if decl.dtype is not None and decl.dtype != model.dtype:
        raise InputSpecError(f"--input {decl}: the model expects dtype {model.dtype} "
                             f"({model.describe()})")
    if len(decl.shape) != len(model.dims) or any(
            m is not None and m != d for m, d in zip(model.dims, decl.shape, strict=False)):
        raise InputSpecError(f"--input {decl} contradicts the model, which expects "
                             f"{model.describe()} (all inputs: {expected})")
    return TensorSpec(name=model.name, shape=list(decl.shape), dtype=model.dtype)


def _example(model: ModelInput) -> str:
    return InputDecl(model.name, tuple(d or 1 for d in model.dims), model.dtype).__str__()
