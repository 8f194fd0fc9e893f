from __future__ import annotations

import numpy as np
import pytest

from neofleet.bundle.meta import Benchmark, Verification
from neofleet.compiler.errors import VerificationError
from neofleet.compiler.select import CandidateOutcome, select_candidate
from neofleet.compiler.verify import Tolerance, compare_outputs

OK = Verification(passed=True, method="host", samples=3, rtol=1e-3, atol=1e-4,
                  max_abs_error=0.0, max_rel_error=0.0)
BAD = Verification(passed=False, method="host", samples=3, rtol=1e-3, atol=1e-4,
                   message="output 0 differs")


def bench(ms: float) -> Benchmark:
    return Benchmark(host="x", threads=2, batch_inputs={}, median_ms=ms, p90_ms=ms, runs=10)


def test_fastest_verified_wins_on_the_host() -> None:
    outcomes = [CandidateOutcome("onnxruntime", OK, bench(2.0)),
                CandidateOutcome("tvm", OK, bench(1.0))]
    winner, selection = select_candidate(outcomes, host_can_run=True)
    assert winner.backend == "tvm"
    assert selection.rule == "fastest-verified"
    assert "tvm 1.000 ms, onnxruntime 2.000 ms" in selection.reason


def test_a_faster_but_unverified_candidate_never_wins() -> None:
    outcomes = [CandidateOutcome("onnxruntime", OK, bench(2.0)),
                CandidateOutcome("tvm", BAD, None)]
    assert select_candidate(outcomes, host_can_run=True)[0].backend == "onnxruntime"


def test_without_benchmarks_untuned_tvm_loses_to_onnxruntime() -> None:
    outcomes = [CandidateOutcome("tvm", OK, None), CandidateOutcome("onnxruntime", OK, None)]
    winner, selection = select_candidate(outcomes, host_can_run=False)
    assert winner.backend == "onnxruntime"
    assert selection.rule == "preference-without-benchmark"


def test_without_benchmarks_fully_tuned_tvm_is_preferred() -> None:
    outcomes = [CandidateOutcome("onnxruntime", OK, None),
                CandidateOutcome("tvm", OK, None, fully_tuned=True)]
    assert select_candidate(outcomes, host_can_run=False)[0].backend == "tvm"


def test_no_verified_candidate_is_an_error_naming_each() -> None:
    outcomes = [CandidateOutcome("onnxruntime", BAD, None),
                CandidateOutcome("tvm", None, None, error="tvm.compile failed: boom")]
    with pytest.raises(VerificationError, match="onnxruntime: output 0 differs; tvm: tvm.compile"):
        select_candidate(outcomes, host_can_run=True)


def test_compare_outputs() -> None:
    tol = Tolerance(rtol=1e-3, atol=1e-4)
    ref = [np.array([1.0, -2.0, 0.0], np.float32)]
    same = compare_outputs(ref, [ref[0] + 1e-6], tol)
    assert same.passed and 0 < same.max_abs < 1e-5
    off = compare_outputs(ref, [ref[0] + np.array([0, 0.5, 0], np.float32)], tol)
    assert not off.passed and "output 0 differs" in off.message and off.max_abs == 0.5
    assert not compare_outputs(ref, [ref[0][:2]], tol).passed
    assert not compare_outputs(ref, [], tol).passed
    nan = compare_outputs(ref, [np.array([1.0, np.nan, 0.0], np.float32)], tol)
    assert not nan.passed
