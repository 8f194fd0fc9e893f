"""The Open Inference Protocol codec: every datatype, nested data, the binary extension,
and each bad request as the right typed error (no server, no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from neofleet.errors import NeofleetError
from neofleet.runtime.errors import (
    InputError,
    ModelNotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    ProtocolError,
    ServerConfigError,
)
from neofleet.runtime.server import protocol
from neofleet.runtime.server.protocol import decode_request, encode_response, model_metadata
from neofleet.runtime.server.signature import DATATYPES, datatype_of, signature_of
from neofleet.runtime.server.status import REASONS, STATUSES, classify

SIG = signature_of([("x", "float32", [1, 4])], [("y", "float32", [1, 2])])
TWO = signature_of([("a", "float32", [2, 2]), ("b", "int64", [2])],
                   [("p", "float32", [2, 2]), ("q", "int64", [2])])


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def x_input(data: Any = (1, 2, 3, 4), shape: Any = (1, 4), datatype: str = "FP32",
            name: str = "x") -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": list(data)}


def binary_body(header: dict[str, Any], *chunks: bytes) -> tuple[bytes, str]:
    head = orjson.dumps(header)
    return head + b"".join(chunks), str(len(head))


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype = DATATYPES[datatype]
    count = int(np.prod(shape))
    if dtype.kind == "b":
        return (np.arange(count) % 3 == 0).reshape(shape)
    if dtype.kind == "f":
        return (np.arange(count, dtype=np.float64) * 0.5 - 1).astype(dtype).reshape(shape)
    info = np.iinfo(dtype)
    values = [int(info.min), int(info.max), 0, 1, 7, 100][:count] + [3] * max(0, count - 6)
    return np.array(values, dtype=object).astype(dtype).reshape(shape)


# ---------------------------------------------------------------------------- datatypes


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("nested", [False, True])
def test_every_datatype_decodes_from_json_and_encodes_back(datatype: str, nested: bool) -> None:
    sig = signature_of([("t", DATATYPES[datatype].name, [2, 3])],
                       [("t", DATATYPES[datatype].name, [2, 3])])
    expected = sample(datatype, (2, 3))
    data = expected.tolist() if nested else expected.reshape(-1).tolist()
    decoded = decode_request(body({"name": "t", "shape": [2, 3], "datatype": datatype,
                                   "data": data}), None, sig)
    (array,) = decoded.inputs
    assert array.dtype == DATATYPES[datatype] and array.shape == (2, 3)
    np.testing.assert_array_equal(array, expected)
    content, header = encode_response("m", "1", None, [array], decoded.outputs)
    assert header is None
    (out,) = orjson.loads(content)["outputs"]
    assert out == {"name": "t", "datatype": datatype, "shape": [2, 3],
                   "data": expected.reshape(-1).tolist()}


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_round_trips_through_the_binary_extension(datatype: str) -> None:
    dtype = DATATYPES[datatype]
    sig = signature_of([("t", dtype.name, [3, 2])], [("t", dtype.name, [3, 2])])
    expected = sample(datatype, (3, 2))
    raw = expected.astype(dtype.newbyteorder("<")).tobytes()
    request, length = binary_body({
        "inputs": [{"name": "t", "shape": [3, 2], "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "t", "parameters": {"binary_data": True}}]}, raw)
    decoded = decode_request(request, length, sig)
    np.testing.assert_array_equal(decoded.inputs[0], expected)
    assert decoded.inputs[0].flags.writeable and decoded.inputs[0].flags.c_contiguous
    content, header = encode_response("m", "1", "id-1", decoded.inputs, decoded.outputs)
    assert header is not None
    doc = orjson.loads(content[:header])
    (out,) = doc["outputs"]
    assert doc["id"] == "id-1" and "data" not in out
    assert out["parameters"] == {"binary_data_size": len(raw)} and out["datatype"] == datatype
    assert content[header:] == raw


def test_mixed_json_and_binary_inputs_and_request_level_binary_output() -> None:
    a = np.arange(4, dtype=np.float32).reshape(2, 2)
    raw = a.tobytes()
    request, length = binary_body({
        "id": "r",
        "inputs": [{"name": "b", "shape": [2], "datatype": "INT64", "data": [5, 6]},
                   {"name": "a", "shape": [2, 2], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "q", "parameters": {"binary_data": False}}, {"name": "p"}]}, raw)
    decoded = decode_request(request, length, TWO)
    assert decoded.id == "r"
    np.testing.assert_array_equal(decoded.inputs[0], a)  # model order, not request order
    np.testing.assert_array_equal(decoded.inputs[1], [5, 6])
    assert [(o.name, o.binary) for o in decoded.outputs] == [("q", False), ("p", True)]
    content, header = encode_response("m", "v", None, [a * 2, np.array([7, 8])],
                                      decoded.outputs)
    assert header is not None
    doc = orjson.loads(content[:header])
    assert "id" not in doc and doc["model_version"] == "v"
    assert doc["outputs"][0]["data"] == [7, 8]
    np.testing.assert_array_equal(np.frombuffer(content[header:], np.float32), (a * 2).ravel())


def test_outputs_default_to_all_as_json() -> None:
    decoded = decode_request(body(x_input()), None, SIG)
    assert [(o.index, o.name, o.binary) for o in decoded.outputs] == [(0, "y", False)]
    assert decoded.rows is None and decoded.id is None


def test_batching_signature_takes_1_to_max_rows() -> None:
    sig = signature_of([("x", "float32", [4, 2])], [("y", "float32", [4])], max_batch=3)
    decoded = decode_request(body(x_input(range(4), (2, 2))), None, sig)
    assert decoded.rows == 2 and decoded.inputs[0].shape == (2, 2)
    for rows in (0, 4):
        with pytest.raises(InputError, match=r"expects x \(FP32 \[1\.\.3, 2\]\)"):
            decode_request(body(x_input(range(rows * 2), (rows, 2))), None, sig)


def test_batched_inputs_must_agree_on_rows() -> None:
    sig = signature_of([("a", "float32", [4, 2]), ("b", "float32", [4])],
                       [("y", "float32", [4])], max_batch=4)
    request = body(x_input(range(4), (2, 2), name="a"), x_input(range(3), (3,), name="b"))
    with pytest.raises(InputError, match=r"same number of rows in dim 0 \(a: 2, b: 3\)"):
        decode_request(request, None, sig)


# ---------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(("raw", "error", "message"), [
    (b"not json", ProtocolError, "not valid JSON"),
    (b"[1, 2]", ProtocolError, "must be a JSON object .* not a JSON list"),
    (b'"text"', ProtocolError, "not a JSON str"),
    (b"{}", ProtocolError, 'needs "inputs"'),
    (b'{"inputs": []}', ProtocolError, 'needs "inputs"'),
    (b'{"inputs": [1]}', ProtocolError, r"inputs\[0\] must be an object"),
    (body(x_input(name="z")), InputError,
     r"unknown input 'z'; the model takes x \(FP32 \[1, 4\]\)"),
    (body(x_input(), x_input()), InputError, "given twice"),
    (body(x_input(range(8), (2, 4))), InputError, r"shape \[2, 4\] given, the model expects"),
    (body(x_input(shape=(1, -4))), ProtocolError, "list of non-negative integers"),
    (body(x_input(shape=("1", 4))), ProtocolError, "list of non-negative integers"),
    (body(x_input(datatype="FP64")), InputError, "datatype 'FP64' given, the model expects FP32"),
    (body(x_input(datatype="BYTES")), InputError, "datatype 'BYTES' given"),
    (body(x_input(datatype=7)), InputError, "datatype 'int' given"),  # type: ignore[arg-type]
    (body(x_input(data=(1, 2, 3))), InputError, r"data has 3 elements, shape \[1, 4\] needs 4"),
    (body({"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2], [3]]}),
     InputError, "ragged"),
    (body(x_input(data=("a", "b", "c", "d"))), InputError, "must be numbers, got strings"),
    (body(x_input(data=(1, None, 3, 4))), InputError, "must be numbers"),
    (body(x_input(data=(True, False, True, True))), InputError, "must be numbers"),
    (body({"name": "x", "shape": [1, 4], "datatype": "FP32"}), ProtocolError, 'no "data"'),
    (body(x_input(), id=5), ProtocolError, '"id" must be a string'),
    (body(x_input(), outputs=[{"name": "nope"}]), InputError, "unknown output 'nope'"),
    (body(x_input(), outputs=[{"name": "y"}, {"name": "y"}]), InputError, "requested twice"),
    (body(x_input(), outputs="y"), ProtocolError, '"outputs" must be a list'),
    (body(x_input(), outputs=[{"name": "y", "parameters": {"binary_data": 1}}]),
     ProtocolError, "binary_data must be true or false"),
    (body(x_input(), parameters={"binary_data_output": "yes"}), ProtocolError,
     "binary_data_output must be true or false"),
    (body(x_input(), parameters=[]), ProtocolError, '"parameters" must be an object'),
    (body({**x_input(), "parameters": {"binary_data_size": 16}}), ProtocolError,
     "either data or binary_data_size"),
    (body({"name": "x", "shape": [1, 4], "datatype": "FP32",
           "parameters": {"binary_data_size": 16}}), ProtocolError,
     "needs the Inference-Header-Content-Length header"),
])
def test_bad_requests_raise_typed_errors(raw: bytes, error: type[Exception],
                                         message: str) -> None:
    with pytest.raises(error, match=message):
        decode_request(raw, None, SIG)


def test_missing_input_names_what_the_model_takes() -> None:
    with pytest.raises(InputError, match=r"missing input\(s\) b; the model takes a \(FP32"):
        decode_request(body(x_input(range(4), (2, 2), name="a")), None, TWO)


@pytest.mark.parametrize(("datatype", "data", "message"), [
    ("INT32", [1.5, 2], "INT32 data must be integers, got floats"),
    ("UINT8", [0, 256], r"outside the UINT8 range \[0, 255\]"),
    ("INT8", [-129, 0], r"outside the INT8 range"),
    ("UINT64", [-1, 0], "outside the UINT64 range"),
    ("INT64", [2**63, 0], r"outside the INT64 range"),
    ("INT64", [1, None], "integers, got nulls, objects or numbers out of range"),
    ("BOOL", [1, 0], "BOOL data must be true/false, got integers"),
])
def test_json_data_must_fit_the_datatype(datatype: str, data: list[Any], message: str) -> None:
    dtype = DATATYPES[datatype].name
    sig = signature_of([("t", dtype, [2])], [("t", dtype, [2])])
    request = body({"name": "t", "shape": [2], "datatype": datatype, "data": data})
    with pytest.raises(InputError, match=message):
        decode_request(request, None, sig)


def binary_x(size: int = 16, raw: bytes = b"\0" * 16) -> tuple[bytes, str]:
    return binary_body({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                    "parameters": {"binary_data_size": size}}]}, raw)


@pytest.mark.parametrize(("case", "error", "message"), [
    (lambda: binary_x(12, b"\0" * 12), InputError,
     r"binary_data_size 12 given, shape \[1, 4\] of FP32 needs 16 bytes"),
    (lambda: binary_x(16, b"\0" * 20), ProtocolError,
     "20 bytes after the JSON header, the inputs' binary_data_size add up to 16"),
    (lambda: binary_x(16, b"\0" * 10), ProtocolError, "runs past the end of the body"),
    (lambda: binary_x(-1), ProtocolError, "binary_data_size must be a byte count"),
    (lambda: (binary_x()[0], "100000"), ProtocolError, "does not fit the body"),
    (lambda: (binary_x()[0], "0"), ProtocolError, "does not fit the body"),
    (lambda: (binary_x()[0], "ten"), ProtocolError, "must be a byte count"),
    (lambda: (body(x_input()), "5"), ProtocolError, "not valid JSON"),
])
def test_inconsistent_binary_requests_raise_typed_errors(case: Any, error: type[Exception],
                                                         message: str) -> None:
    raw, length = case()
    with pytest.raises(error, match=message):
        decode_request(raw, length, SIG)


def test_bool_binary_bytes_must_be_0_or_1() -> None:
    sig = signature_of([("t", "bool", [2])], [("t", "bool", [2])])
    raw, length = binary_body({"inputs": [{"name": "t", "shape": [2], "datatype": "BOOL",
                                           "parameters": {"binary_data_size": 2}}]}, b"\x01\x02")
    with pytest.raises(InputError, match="BOOL bytes must be 0 or 1"):
        decode_request(raw, length, sig)


def test_integers_beyond_64_bits_arrive_as_floats_and_are_refused() -> None:
    sig = signature_of([("t", "int64", [1])], [("t", "int64", [1])])
    raw = b'{"inputs": [{"name": "t", "shape": [1], "datatype": "INT64", "data": [%d]}]}' % 2**64
    with pytest.raises(InputError, match="INT64 data must be integers, got floats"):
        decode_request(raw, None, sig)


def test_json_header_alone_with_the_length_header_is_fine() -> None:
    raw = body(x_input())
    decoded = decode_request(raw, str(len(raw)), SIG)
    np.testing.assert_array_equal(decoded.inputs[0], [[1, 2, 3, 4]])


# ---------------------------------------------------------------------------- metadata, errors


def test_datatype_of_refuses_what_oip_cannot_carry() -> None:
    assert datatype_of("float32") == "FP32" and datatype_of(">i4") == "INT32"
    with pytest.raises(ServerConfigError, match="complex64 has no Open Inference Protocol"):
        datatype_of("complex64")


def test_model_metadata_marks_the_batch_dim_variable() -> None:
    sig = signature_of([("x", "float32", [4, 3])], [("y", "int64", [4])], max_batch=4)
    assert model_metadata("m", "r1", "neofleet_tvm", sig) == {
        "name": "m", "versions": ["r1"], "platform": "neofleet_tvm",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}]}
    assert model_metadata("m", "r1", "p", SIG)["inputs"][0]["shape"] == [1, 4]


def test_error_body_is_the_oip_error_shape() -> None:
    assert orjson.loads(protocol.error_body("bad")) == {"error": "bad"}


@pytest.mark.parametrize(("exc", "http_status", "status", "reason"), [
    (InputError("x"), 400, "client_error", "InvalidInput"),
    (ProtocolError("x"), 400, "client_error", "InvalidRequest"),
    (PayloadTooLargeError("x"), 413, "client_error", "PayloadTooLarge"),
    (ModelNotFoundError("x"), 404, "client_error", "ModelNotFound"),
    (OverloadedError("x"), 503, "overloaded", "Overloaded"),
    (NotReadyError("x"), 503, "unavailable", "NotReady"),
    (RuntimeError("boom\nmore"), 500, "server_error", "InternalError"),
    (NeofleetError("other"), 500, "server_error", "InternalError"),
])
def test_classify_maps_each_error_once(exc: Exception, http_status: int, status: str,
                                       reason: str) -> None:
    outcome = classify(exc)
    assert (outcome.http_status, outcome.status, outcome.reason) == (http_status, status, reason)
    assert outcome.status in STATUSES and outcome.reason in REASONS
    if http_status == 500:
        assert outcome.message.startswith("internal error: ") and "\n" not in outcome.message
