"""Dynamic batching, the pure part: which models can batch, how requests pack and split.

A bundle is compiled for one batch size B (the leading dim of every input). With
``--max-batch M`` (1 <= M <= B) requests may carry 1..M rows; the batcher
(``batcher.py``) queues them for up to ``--batch-timeout-ms``, ``pack`` concatenates their
inputs along dim 0 and zero-pads to B, the model runs once, and ``split`` hands each
request its rows of every output. That needs every output to carry the batch in dim 0
too: a model with an output without it (a batch-wide reduction, say) could mix requests,
so ``compiled_batch`` refuses it. A model that takes any number of rows (dim 0 is -1 in
every input and output: tree models) has B = ``ANY_ROWS``: requests are concatenated up to
M rows and nothing is padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

import numpy as np

from neofleet.runtime.errors import ServerConfigError
from neofleet.runtime.server.signature import Signature, TensorMeta

ANY_ROWS = -1


def compiled_batch(signature: Signature, max_batch: int) -> int:
    """The bundle's batch size B, once it is clear requests of up to ``max_batch`` rows can
    be packed into it; ServerConfigError saying why not otherwise."""
    if max_batch < 1:
        raise ServerConfigError(f"--max-batch must be at least 1, not {max_batch}")
    leading = {_leading(m, "input") for m in signature.inputs}
    if len(leading) != 1:
        raise ServerConfigError(f"cannot batch: the inputs disagree on dim 0 "
                                f"({_dims(signature.inputs)})")
    batch = leading.pop()
    unbatched = [m for m in signature.outputs if _leading(m, "output") != batch]
    if unbatched:
        raise ServerConfigError(f"cannot batch: output(s) {_dims(tuple(unbatched))} do not have "
                                f"the batch ({batch}) in dim 0, so results could not be split "
                                "per request")
    if max_batch > batch != ANY_ROWS:
        raise ServerConfigError(f"--max-batch {max_batch} is larger than the bundle's batch "
                                f"size {batch} (dim 0 of {_dims(signature.inputs)}); compile "
                                f"for batch {max_batch} or lower --max-batch")
    return batch


def _leading(meta: TensorMeta, kind: str) -> int:
    if not meta.shape:
        raise ServerConfigError(f"cannot batch: {kind} {meta.name} is a scalar (no dim 0)")
    return meta.shape[0]


def _dims(metas: tuple[TensorMeta, ...]) -> str:
    return ", ".join(f"{m.name} {list(m.shape)}" for m in metas)


def fitting(rows: Sequence[int], max_rows: int) -> int:
    """How many of the leading ``rows`` (in queue order) fit into one batch of ``max_rows``."""
    total = 0
    for count, n in enumerate(rows):
        if total + n > max_rows:
            return count
        total += n
    return len(rows)


def pack(requests: Sequence[Sequence[np.ndarray]], batch: int) -> list[np.ndarray]:
    """Concatenate each input of ``requests`` along dim 0 and zero-pad it to ``batch`` rows
    (no padding when ``batch`` is ANY_ROWS)."""
    if not requests:
        raise ValueError("nothing to pack")
    if batch == ANY_ROWS:
        return [np.concatenate(column) for column in zip(*requests, strict=True)]
    total = sum(r[0].shape[0] for r in requests)
    if total > batch:
        raise ValueError(f"{total} rows do not fit a batch of {batch}")
    packed = []
    for column in zip(*requests, strict=True):
        first = column[0]
        out = np.zeros((batch, *first.shape[1:]), dtype=first.dtype)
        start = 0
        for array in column:
            out[start:start + array.shape[0]] = array
            start += array.shape[0]
        packed.append(out)
    return packed


def split(outputs: Sequence[np.ndarray], rows: Sequence[int]) -> list[list[np.ndarray]]:
    """Each request's rows of every output (views), in request order; padding is dropped."""
    starts = [0, *accumulate(rows)]
    for output in outputs:
        if output.ndim == 0 or output.shape[0] < starts[-1]:
            raise ValueError(f"an output of shape {list(output.shape)} cannot hold "
                             f"{starts[-1]} rows")
    return [[o[start:start + n] for o in outputs]
            for start, n in zip(starts, rows, strict=False)]
