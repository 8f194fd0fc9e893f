from __future__ import annotations

import pytest

from neofleet.compiler.errors import InputSpecError
from neofleet.compiler.inputs import InputDecl, ModelInput, parse_input_decl, resolve_inputs


@pytest.mark.parametrize(("text", "expected"), [
    ("x:1x3x224x224:float32", InputDecl("x", (1, 3, 224, 224), "float32")),
    ("x:1x3", InputDecl("x", (1, 3), None)),
    ("input:0:1x8:int64", InputDecl("input:0", (1, 8), "int64")),
    ("s::int64", InputDecl("s", (), "int64")),
])
def test_parse_input_decl(text: str, expected: InputDecl) -> None:
    assert parse_input_decl(text) == expected
    assert parse_input_decl(str(expected)) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("x", "expected NAME"),
    (":1x3", "expected NAME"),
    ("x:1x0", "between 1 and"),
    ("x:axb", "dims must look like"),
    ("x:1x3:floaty", "unknown dtype 'floaty'"),
    ("x:100000x100000", "exceed the limit"),
    ("x:2000000", "between 1 and"),
])
def test_parse_input_decl_rejects(text: str, message: str) -> None:
    with pytest.raises(InputSpecError, match=message):
        parse_input_decl(text)


MODEL = [ModelInput("image", (None, 3, 32, 32), "float32"), ModelInput("k", (1,), "int64")]


def test_resolve_fills_dynamic_dims_and_keeps_model_order() -> None:
    specs = resolve_inputs(MODEL, [InputDecl("image", (4, 3, 32, 32))])
    assert [(s.name, s.shape, s.dtype) for s in specs] == [
        ("image", [4, 3, 32, 32], "float32"), ("k", [1], "int64")]


@pytest.mark.parametrize(("decls", "message"), [
    ([], r"input image has dynamic dims \(image:\?x3x32x32:float32\)"),
    ([InputDecl("img", (1, 3, 32, 32))], "the model has no input 'img'; it expects: image:"),
    ([InputDecl("image", (1, 3, 64, 64))], "contradicts the model, which expects "
                                            r"image:\?x3x32x32:float32"),
    ([InputDecl("image", (1, 3, 32))], "contradicts the model"),
    ([InputDecl("image", (1, 3, 32, 32), "float16")], "the model expects dtype float32"),
    ([InputDecl("image", (1, 3, 32, 32)), InputDecl("image", (1, 3, 32, 32))], "twice"),
])
def test_resolve_errors_say_what_the_model_expects(decls: list[InputDecl], message: str) -> None:
    with pytest.raises(InputSpecError, match=message):
        resolve_inputs(MODEL, decls)
