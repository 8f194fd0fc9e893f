"""Small ONNX models written for the tests (fixed seeds) that have the input shapes of
real models random values break: an encoder-like model whose int64 token ids, token
types and attention mask go through embedding tables (Gather), and a model with a 0-d
int64 sample rate compared with a constant inside an ``If``, a state input and two
outputs (the shape of Silero VAD's signature)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def encoder_onnx(path: Path, *, vocab: int = 50, types: int = 2, width: int = 8,
                 tokens: int = 16) -> Path:
    """``input_ids``/``token_type_ids``/``attention_mask`` (1 x tokens, int64) ->
    masked mean of word + type embeddings, then a matrix: ``embedding`` (1 x width)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((vocab, width)).astype(np.float32),
                                     "word_embeddings"),
             numpy_helper.from_array(rng.standard_normal((types, width)).astype(np.float32),
                                     "type_embeddings"),
             numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32),
                                     "dense"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    nodes = [
        helper.make_node("Gather", ["word_embeddings", "input_ids"], ["words"]),
        helper.make_node("Gather", ["type_embeddings", "token_type_ids"], ["types"]),
        helper.make_node("Add", ["words", "types"], ["summed"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["summed", "mask3"], ["masked"]),
        helper.make_node("ReduceMean", ["masked"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "dense"], ["embedding"]),
    ]
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, tokens])
           for n in ("input_ids", "token_type_ids", "attention_mask")]
    graph = helper.make_graph(nodes, "encoder", ids, [
        helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def stateful_onnx(path: Path, *, rate: int = 16000, width: int = 4) -> Path:
    """``x`` (1 x width float), ``state`` (1 x width float), ``sr`` (0-d int64): when ``sr``
    equals ``rate`` the model computes ``x * w + state``, else ``x - state``. Outputs:
    ``prob`` (1 x 1, sigmoid of the sum) and ``state_out`` (1 x width)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.standard_normal((width,)).astype(np.float32), "w")
    known = numpy_helper.from_array(np.array(rate, np.int64), "rate")
    axis = numpy_helper.from_array(np.array([1], np.int64), "axis1")
    then_graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["xw"]),
         helper.make_node("Add", ["xw", "state"], ["then_out"])], "then", [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1, width])])
    else_graph = helper.make_graph(
        [helper.make_node("Sub", ["x", "state"], ["else_out"])], "else", [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, width])])
    nodes = [helper.make_node("Equal", ["sr", "rate"], ["known_rate"]),
             helper.make_node("If", ["known_rate"], ["state_out"], then_branch=then_graph,
                              else_branch=else_graph),
             helper.make_node("ReduceSum", ["state_out", "axis1"], ["total"], keepdims=1),
             helper.make_node("Sigmoid", ["total"], ["prob"])]
    graph = helper.make_graph(nodes, "stateful", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, width]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, [])], [
        helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1]),
        helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, width])],
        [weight, known, axis])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path
