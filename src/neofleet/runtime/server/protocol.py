"""Open Inference Protocol v2 over REST, as pure functions: bytes in, arrays out, and back.

``decode_request(body, header_length, signature)`` turns an infer request into arrays in
the model's input order, checked against the model: every input named once, datatype
equal to the model's, shape equal to the model's (with batching, 1..max_batch rows in
dim 0), data of exactly ``prod(shape)`` elements. JSON ``data`` may be flat or nested.
With Triton's binary tensor extension the JSON header is the first
``Inference-Header-Content-Length`` bytes of the body and each input with
``parameters.binary_data_size`` takes its raw little-endian bytes, in order, from the rest.
Bad input raises ``InputError`` (the tensors do not fit the model) or ``ProtocolError``
(the request does not follow the protocol); nothing here does I/O.

``encode_response`` writes the response: JSON outputs with flat ``data``, or, for outputs
asked for with ``parameters.binary_data`` (or request-level ``binary_data_output``),
``parameters.binary_data_size`` in the JSON and the raw bytes after it; it then also
returns the JSON header's length for the ``Inference-Header-Content-Length`` header.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from neofleet.runtime.errors import InputError, ProtocolError
from neofleet.runtime.server.signature import Signature, TensorMeta, datatype_of

HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ("binary_tensor_data",)
# JSON numbers parse to bool, int64/uint64 or float64 arrays; what each target kind accepts
_JSON_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_LITTLE = sys.byteorder == "little"


@dataclass(frozen=True)
class RequestedOutput:
    index: int
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request: arrays in the model's input order."""

    id: str | None
    inputs: list[np.ndarray]
    rows: int | None
    outputs: tuple[RequestedOutput, ...]


# ---------------------------------------------------------------------------- decode


def decode_request(body: bytes, header_length: str | None, signature: Signature) -> InferRequest:
    """Parse and check an infer request body against ``signature``."""
    json_end = _json_end(body, header_length)
    doc = _load_object(memoryview(body)[:json_end])
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise ProtocolError('the request needs "inputs": a non-empty list of '
                            '{"name", "shape", "datatype", "data"} objects')
    reader = _BinaryReader(body, json_end, enabled=header_length is not None)
    arrays: list[np.ndarray | None] = [None] * len(signature.inputs)
    for position, item in enumerate(items):
        index, array = _decode_input(item, position, signature, reader)
        if arrays[index] is not None:
            raise InputError(f"input {signature.inputs[index].name!r} is given twice")
        arrays[index] = array
    reader.finish()
    ordered = _all_inputs(arrays, signature)
    rows = _rows(ordered, signature) if signature.max_batch is not None else None
    return InferRequest(_request_id(doc), ordered, rows, _requested_outputs(doc, signature))


def _json_end(body: bytes, header_length: str | None) -> int:
    if header_length is None:
        return len(body)
    text = header_length.strip()
    if not text.isdigit():
        raise ProtocolError(f"Inference-Header-Content-Length must be a byte count, "
                            f"not {header_length[:40]!r}")
    length = int(text)
    if not 0 < length <= len(body):
        raise ProtocolError(f"Inference-Header-Content-Length {length} does not fit the body "
                            f"of {len(body)} bytes")
    return length


def _load_object(raw: memoryview) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"the body is not valid JSON ({exc}); expected an inference "
                            'request object {"inputs": [...]}') from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"the body must be a JSON object {{\"inputs\": [...]}}, "
                            f"not a JSON {type(doc).__name__}")
    return doc


def _decode_input(item: Any, position: int, signature: Signature,
                  reader: _BinaryReader) -> tuple[int, np.ndarray]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise ProtocolError(f"inputs[{position}] must be an object with a string \"name\", "
                            '"shape", "datatype" and "data"')
    index = signature.input_index(item["name"])
    meta = signature.inputs[index]
    _check_datatype(item.get("datatype"), meta)
    shape = _shape(item.get("shape"), meta.name)
    _check_shape(shape, meta, signature.max_batch)
    size = _parameters(item, f"input {meta.name}").get("binary_data_size")
    if size is not None:
        if "data" in item:
            raise ProtocolError(f"input {meta.name}: give either data or binary_data_size")
        return index, reader.take(meta, shape, size)
    if "data" not in item:
        raise ProtocolError(f"input {meta.name}: no \"data\" (nor parameters.binary_data_size "
                            "with the binary tensor extension)")
    return index, _from_json(item["data"], meta, shape)


def _check_datatype(datatype: Any, meta: TensorMeta) -> None:
    if datatype != meta.datatype:
        given = datatype if isinstance(datatype, str) else type(datatype).__name__
        raise InputError(f"input {meta.name}: datatype {str(given)[:40]!r} given, the model "
                         f"expects {meta.datatype}")


def _shape(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or any(type(d) is not int or d < 0 for d in value):
        raise ProtocolError(f"input {name}: \"shape\" must be a list of non-negative integers")
    return tuple(value)


def _check_shape(shape: tuple[int, ...], meta: TensorMeta, max_batch: int | None) -> None:
    """``shape`` must equal the model's; -1 in the model's shape takes any size >= 1, and
    with batching dim 0 takes 1..max_batch rows."""
    expected = meta.shape
    ok = len(shape) == len(expected) and all(
        s == e or (e == -1 and s >= 1) or (i == 0 and max_batch is not None)
        for i, (s, e) in enumerate(zip(shape, expected, strict=True)))
    if ok and max_batch is not None:
        ok = 1 <= shape[0] <= max_batch
    if not ok:
        raise InputError(f"input {meta.name}: shape {list(shape)} given, the model expects "
                         f"{meta.describe(max_batch)}")


def _parameters(doc: dict[str, Any], where: str) -> dict[str, Any]:
    params = doc.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{where}: \"parameters\" must be an object")
    return params


def _from_json(data: Any, meta: TensorMeta, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise InputError(f"input {meta.name}: data is not a regular array of numbers "
                         "(ragged nesting)") from None
    if array.size != count:
        raise InputError(f"input {meta.name}: data has {array.size} elements, shape "
                         f"{list(shape)} needs {count}")
    if array.dtype.kind == "f" and meta.dtype.kind in "iu":
        array = _exact_integers(array, data, meta)
    return _cast(array, meta).reshape(shape)


def _exact_integers(array: np.ndarray, data: Any, meta: TensorMeta) -> np.ndarray:
    """numpy turns ints beyond int64 mixed with others into float64: keep integers exact."""
    exact = np.array(data, dtype=object).reshape(-1)
    if not all(type(v) is int for v in exact):
        return array  # real floats: refused by _cast
    info = np.iinfo(meta.dtype)
    if exact.size and (min(exact) < info.min or max(exact) > info.max):
        raise InputError(f"input {meta.name}: values outside the {meta.datatype} range "
                         f"[{info.min}, {info.max}]")
    return exact.astype(meta.dtype)


def _cast(array: np.ndarray, meta: TensorMeta) -> np.ndarray:
    target = meta.dtype
    if array.dtype.kind not in _JSON_KINDS[target.kind]:
        wanted = {"b": "true/false", "i": "integers", "u": "integers", "f": "numbers"}
        raise InputError(f"input {meta.name}: {meta.datatype} data must be "
                         f"{wanted[target.kind]}, got {_kind_name(array)}")
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise InputError(f"input {meta.name}: values outside the {meta.datatype} range "
                             f"[{info.min}, {info.max}]")
    return array.astype(target, copy=False)


def _kind_name(array: np.ndarray) -> str:
    names = {"b": "true/false", "i": "integers", "u": "integers", "f": "floats",
             "U": "strings", "O": "nulls, objects or numbers out of range"}
    return names.get(array.dtype.kind, str(array.dtype))


class _BinaryReader:
    """Hands out the binary tensors that follow the JSON header, in order."""

    def __init__(self, body: bytes, start: int, *, enabled: bool) -> None:
        self._body, self._start, self._offset, self._enabled = body, start, start, enabled

    def take(self, meta: TensorMeta, shape: tuple[int, ...], size: Any) -> np.ndarray:
        if type(size) is not int or size < 0:
            raise ProtocolError(f"input {meta.name}: binary_data_size must be a byte count")
        if not self._enabled:
            raise ProtocolError(f"input {meta.name}: binary_data_size needs the "
                                "Inference-Header-Content-Length header")
        count = math.prod(shape)
        if size != count * meta.dtype.itemsize:
            raise InputError(f"input {meta.name}: binary_data_size {size} given, shape "
                             f"{list(shape)} of {meta.datatype} needs "
                             f"{count * meta.dtype.itemsize} bytes")
        end = self._offset + size
        if end > len(self._body):
            raise ProtocolError(f"input {meta.name}: binary data runs past the end of the body "
                                f"({end - self._start} bytes needed after the JSON header, "
                                f"{len(self._body) - self._start} sent)")
        flat = np.frombuffer(self._body, meta.dtype, count=count, offset=self._offset)
        self._offset = end
        array = flat.astype(meta.dtype.newbyteorder("="), copy=True).reshape(shape)
        if meta.datatype == "BOOL" and count and array.view(np.uint8).max() > 1:
            raise InputError(f"input {meta.name}: BOOL bytes must be 0 or 1")
        return array

    def finish(self) -> None:
        if self._offset != len(self._body):
            raise ProtocolError(f"the body has {len(self._body) - self._start} bytes after the "
                                f"JSON header, the inputs' binary_data_size add up to "
                                f"{self._offset - self._start}")


def _all_inputs(arrays: list[np.ndarray | None], signature: Signature) -> list[np.ndarray]:
    missing = [m.name for m, a in zip(signature.inputs, arrays, strict=True) if a is None]
    if missing:
        raise InputError(f"missing input(s) {', '.join(missing)}; the model takes "
                         f"{signature.describe_inputs()}")
    return [a for a in arrays if a is not None]


def _rows(arrays: list[np.ndarray], signature: Signature) -> int:
    rows = {a.shape[0] for a in arrays}
    if len(rows) != 1:
        names = ", ".join(f"{m.name}: {a.shape[0]}"
                          for m, a in zip(signature.inputs, arrays, strict=True))
        raise InputError(f"every input needs the same number of rows in dim 0 ({names})")
    return int(rows.pop())


def _request_id(doc: dict[str, Any]) -> str | None:
    value = doc.get("id")
    if value is not None and not isinstance(value, str):
        raise ProtocolError('"id" must be a string')
    return value


def _requested_outputs(doc: dict[str, Any], signature: Signature) -> tuple[RequestedOutput, ...]:
    default = _parameters(doc, "the request").get("binary_data_output", False)
    if not isinstance(default, bool):
        raise ProtocolError("parameters.binary_data_output must be true or false")
    wanted = doc.get("outputs")
    if wanted is None:
        return tuple(RequestedOutput(i, o.name, default) for i, o in enumerate(signature.outputs))
    if not isinstance(wanted, list) or not all(
            isinstance(w, dict) and isinstance(w.get("name"), str) for w in wanted):
        raise ProtocolError('"outputs" must be a list of {"name": ...} objects')
    chosen = tuple(_requested(w, signature, default) for w in wanted)
    if len({c.index for c in chosen}) != len(chosen):
        raise InputError("an output is requested twice")
    return chosen


def _requested(item: dict[str, Any], signature: Signature, default: bool) -> RequestedOutput:
    index = signature.output_index(item["name"])
    binary = _parameters(item, f"output {item['name']}").get("binary_data", default)
    if not isinstance(binary, bool):
        raise ProtocolError(f"output {item['name']}: parameters.binary_data must be true or false")
    return RequestedOutput(index, item["name"], binary)


# ---------------------------------------------------------------------------- encode


def encode_response(model_name: str, model_version: str, request_id: str | None,
                    outputs: Sequence[np.ndarray],
                    requested: Sequence[RequestedOutput]) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    docs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for want in requested:
        array = outputs[want.index]
        entry: dict[str, Any] = {"name": want.name, "datatype": datatype_of(array.dtype),
                                 "shape": list(array.shape)}
        if want.binary:
            raw = _little_endian_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = np.ascontiguousarray(array, array.dtype.newbyteorder("=")).reshape(-1)
        docs.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = docs
    head = orjson.dumps(doc, option=_NUMPY)
    if not chunks:
        return head, None
    return b"".join([head, *chunks]), len(head)


def _little_endian_bytes(array: np.ndarray) -> bytes:
    if _LITTLE and array.dtype.byteorder in "=|<":
        return array.tobytes()
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def error_body(message: str) -> bytes:
    """The OIP error shape: ``{"error": "<message>"}``."""
    return orjson.dumps({"error": message})


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "neofleet", "version": version, "extensions": list(EXTENSIONS)}


def model_metadata(name: str, version: str, platform: str, signature: Signature) -> dict[str, Any]:
    """Model metadata; with batching the leading dim is -1 (1..max_batch rows)."""
    def tensors(metas: tuple[TensorMeta, ...]) -> list[dict[str, Any]]:
        out = []
        for m in metas:
            shape = list(m.shape)
            if signature.max_batch is not None and shape:
                shape[0] = -1
            out.append({"name": m.name, "datatype": m.datatype, "shape": shape})
        return out

    return {"name": name, "versions": [version], "platform": platform,
            "inputs": tensors(signature.inputs), "outputs": tensors(signature.outputs)}
