"""Choose which verified candidate becomes the bundle (pure).

Rule ``fastest-verified``: when the host can run the target, every verified candidate
was benchmarked here and the fastest median wins.

Rule ``preference-without-benchmark``: when the host cannot run the target (aarch64
from x86), nothing can be timed honestly (qemu timings say nothing about a Cortex-A72).
Then a TVM build is preferred only if every one of its kernels had tuning records for
this target; otherwise ONNX Runtime (hand-written NEON/AVX kernels) is preferred,
because untuned TVM kernels measured 50-160x slower than ONNX Runtime on CNNs. On GPU
targets a verified TensorRT engine is preferred (NVIDIA's kernels, timed by TensorRT's
builder for this very GPU). Otherwise whichever candidate verified.

Rule ``built-not-verified``: a GPU target compiled on a host without a GPU that can run
it; no candidate could run, the first one built is kept (``neofleet serve`` verifies it
on the GPU before it reports ready).

Backends the target prefers that did not apply (e.g. ``tensorrt`` where TensorRT is not
installed) are named in the selection's reason with why (``note_skipped``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from neofleet.bundle.meta import (
    NOT_RUN_NO_GPU,
    Benchmark,
    CandidateReport,
    Selection,
    Verification,
)
from neofleet.compiler.errors import VerificationError


@dataclass(frozen=True)
class CandidateOutcome:
    backend: str
    verification: Verification | None
    benchmark: Benchmark | None
    fully_tuned: bool = False
    error: str = ""

    @property
    def verified(self) -> bool:
        return self.verification is not None and self.verification.passed

    @property
    def deferred(self) -> bool:
        """Built for a GPU this host does not have: not run at all (not failed)."""
        return self.verification is not None and self.verification.method == NOT_RUN_NO_GPU


def select_candidate(outcomes: Sequence[CandidateOutcome],
                     host_can_run: bool) -> tuple[CandidateOutcome, Selection]:
    verified = [o for o in outcomes if o.verified]
    deferred = [o for o in outcomes if o.deferred]
    if not verified and deferred:
        return deferred[0], Selection(
            rule="built-not-verified", reason=f"{deferred[0].backend}: no GPU on this host "
            "could run the candidates; the bundle's verification samples are run on the "
            "target GPU before it serves")
    if not verified:
        reasons = "; ".join(f"{o.backend}: {o.error or _message(o)}" for o in outcomes)
        raise VerificationError(f"no candidate passed verification ({reasons})")
    timed = [o for o in verified if o.benchmark is not None]
    if host_can_run and len(timed) == len(verified):
        return _fastest(timed)
    return _preferred(verified)


def _message(outcome: CandidateOutcome) -> str:
    return outcome.verification.message if outcome.verification else "not verified"


def _fastest(timed: list[CandidateOutcome]) -> tuple[CandidateOutcome, Selection]:
    ranked = sorted(timed, key=lambda o: o.benchmark.median_ms if o.benchmark else 0.0)
    winner = ranked[0]
    times = ", ".join(f"{o.backend} {o.benchmark.median_ms:.3f} ms"
                      for o in ranked if o.benchmark)
    return winner, Selection(rule="fastest-verified",
                             reason=f"median latency on the compile host: {times}")


def _preferred(verified: list[CandidateOutcome]) -> tuple[CandidateOutcome, Selection]:
    rule = "preference-without-benchmark"
    for outcome in verified:
        if outcome.backend == "tvm" and outcome.fully_tuned:
            return outcome, Selection(rule=rule, reason="tvm: every kernel has tuning records "
                                                       "for this target")
    for outcome in verified:
        if outcome.backend == "tensorrt":
            return outcome, Selection(rule=rule, reason="tensorrt: an engine built and timed "
                                      "by TensorRT on this GPU kind, preferred over untuned "
                                      "tvm-cuda kernels")
    for outcome in verified:
        if outcome.backend == "onnxruntime":
            return outcome, Selection(rule=rule, reason="host cannot time this target; "
                                      "onnxruntime preferred over untuned tvm kernels")
    return verified[0], Selection(rule=rule, reason=f"only {verified[0].backend} verified")


def note_skipped(selection: Selection, winner: str, preference: Sequence[str],
                 reports: Sequence[CandidateReport]) -> Selection:
    """Name, in the selection's reason, each backend the target prefers over ``winner``
    that did not apply here, and why (pure)."""
    ahead = set(preference[:preference.index(winner)]) if winner in preference else set()
    skipped = [f"{r.backend} skipped: {r.message}" for r in reports
               if r.status == "not-applicable" and r.backend in ahead]
    if not skipped:
        return selection
    return selection.model_copy(update={"reason": "; ".join([selection.reason, *skipped])})


def crossover_rows(timings: dict[str, dict[str, float]]) -> tuple[int | None, str]:
    """From how many rows the ``forest`` path beats the ``rows`` path, given median
    milliseconds per row count for each: the smallest measured count from which the forest
    path is at least as fast at every larger count. ``None`` when it never is (the rows
    path is then used for every batch)."""
    rows, forest = timings.get("rows", {}), timings.get("forest", {})
    counts = sorted(int(n) for n in rows if n in forest)
    if not counts:
        return None, "no timings: rows path for every batch"
    table = ", ".join(f"{n}: {rows[str(n)]:.3f}/{forest[str(n)]:.3f}" for n in counts)
    for i, n in enumerate(counts):
        if all(forest[str(m)] <= rows[str(m)] for m in counts[i:]):
            start = "1 row" if n == 1 else f"{n} rows"
            return n, f"forest path from {start} (rows/forest ms by batch: {table})"
    return None, f"rows path for every batch (rows/forest ms by batch: {table})"
