"""MetaSchedule tuning for CPU (``llvm``) targets, with a tuning database that is kept.

One database per target, shared by every model compiled for it::

    <database_root>/
      llvm-skylake-avx512-3f9c0a1b2c3d4e5f/   tuning_database_dir(root, target dict)
        target.json                  the canonical target dict the name was hashed from
        database_workload.json       TVM JSONDatabase: one tuned workload (TIR module) a line
        database_tuning_record.json  TVM JSONDatabase: one measured schedule (trace) a line
        logs/tuning.log              MetaSchedule's logs, appended by every run
        .lock                        flock(2) file serialising compiles for this target
        corrupt-<utc time>/          a database that could not be read, moved aside

The directory name is ``<kind>-<mcpu or mtriple>-<sha256 of the canonical target JSON>[:16]``;
the canonical JSON is the target dict with sorted keys, without ``keys``/``tag`` (derived by
TVM) and without empty values, so ``{"kind": "llvm", "mcpu": "haswell", "num-cores": 2}``
and ``Target(that).export()`` name the same directory. ``mcpu``, ``mattr``, ``mtriple`` and
``num-cores`` all change the key: schedules are only reused on the target they were measured
for. Inside a database, records are keyed by workload: the structural hash/equality of each
fused TIR function (TVM's ``module_equality="structural"``), so a layer of one model finds
the records of the same layer shape measured for another model.

``tune_relax_module`` legalizes and fuses the Relax module (the same passes as the default
CPU pipeline), extracts one task per fused TIR function, counts a task as *reused* when the
database already has a valid record for its workload, tunes only the other tasks (the trial
budget split evenly between them), then applies the database's best schedule to every
function it has one for. A second compile of the same model for the same target therefore
runs no trials; with ``trials=0`` nothing is tuned and existing records are still applied.

What the caller does next, with the module it gets back::

    ex = tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))

The default pipeline's legalization and fusion passes leave the already fused, scheduled
functions (attribute ``tirx.is_scheduled``) as they are; functions without a record stay
unscheduled, exactly as in an untuned build.

Concurrency: the whole read-tune-write of one target's database runs under an exclusive
``flock`` on ``.lock``; a second compile for the same target waits (and says so through
``progress``), then reuses what the first one measured. Other targets are not blocked.
flock works on local disks and NFSv4; not on every network filesystem.

A database file that cannot be read (bad JSON, a truncated line left by a killed compile, a
record pointing at a missing workload) is not an error: both files are moved to
``corrupt-<utc time>/`` in the same directory, ``progress`` says so, and the affected tasks
are tuned again (or, with ``trials=0``, built untuned). Empty files are an empty database.

Measuring needs the host to run the target's code: a cross target (``mtriple`` of another
architecture) can only be used with ``trials=0`` or with every task already in the database.

Cost on 2 cores: a run that tunes pays ~18 s once per process to import
``tvm.s_tir.tensor_intrin`` (TuneContext needs it), then ~0.5-1 s per trial; builds run in
one worker process per CPU (capped at 8, cgroup quota honoured) with a build function that
skips that import (``build_candidate``: TVM's default re-imports it in every worker for
every batch), measurements run one at a time with ``TVM_NUM_THREADS`` = the target's
``num-cores``. A run that only reuses records costs the fusion, a JSON load and the apply.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from neofleet.compiler.errors import BackendBuildError, BackendUnavailableError

Progress = Callable[[str], None]

_WORKLOADS = "database_workload.json"
_RECORDS = "database_tuning_record.json"
_LOCK = ".lock"
_LOG = "logs/tuning.log"
_MAX_TRIALS_PER_ITER = 32
_MAX_BUILDERS = 8
_DERIVED_TARGET_KEYS = ("keys", "tag")
_MS_LOGGER = "tvm.s_tir.meta_schedule"
# imported by MetaSchedule but not declared by the apache-tvm wheel
_TUNING_MODULES = ("cloudpickle", "psutil", "xgboost")


@dataclass(frozen=True)
class TuningReport:
    database_dir: str  # where the records live
    tasks: int  # tuning tasks extracted
    reused_tasks: int  # tasks that already had records
    tuned_tasks: int  # tasks tuned in this run (and that now have a record)
    trials: int  # trials spent in this run
    seconds: float


@dataclass
class _Tally:
    """What the measure callback saw: trials spent and the best time of each task."""

    trials: int = 0
    best_ms: dict[int, float] = field(default_factory=dict)


# -- the database directory ------------------------------------------------------------------


def canonical_target(target_json: Mapping[str, Any]) -> dict[str, Any]:
    """The target dict as keyed: no TVM-derived ``keys``/``tag``, no empty values."""
    out: dict[str, Any] = {}
    for key, value in target_json.items():
        if key in _DERIVED_TARGET_KEYS or value in (None, "", (), []):
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def tuning_database_dir(root: Path, target_json: Mapping[str, Any]) -> Path:
    """``root/<short name>-<sha256 of the canonical target JSON>[:16]``."""
    canonical = canonical_target(target_json)
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Path(root) / f"{_short_name(canonical)}-{digest}"


def _short_name(target: Mapping[str, Any]) -> str:
    kind = str(target.get("kind", "target"))
    detail = target.get("mcpu") or target.get("mtriple") or "generic"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{kind}-{detail}")


def _write_target(db_dir: Path, canonical: Mapping[str, Any]) -> None:
    marker = db_dir / "target.json"
    if not marker.exists():
        marker.write_text(json.dumps(canonical, sort_keys=True, indent=2) + "\n")


@contextlib.contextmanager
def _locked(db_dir: Path, progress: Progress) -> Iterator[None]:
    """Hold an exclusive flock on ``db_dir/.lock``; say so when another compile has it."""
    with (db_dir / _LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"tuning: waiting for another compile that holds {db_dir / _LOCK}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- reading the database --------------------------------------------------------------------


def _json_lines(path: Path) -> list[Any]:
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise ValueError(f"{path.name} line {number}: {exc}") from exc
    return rows


def _database_problem(db_dir: Path) -> str | None:
    """Why TVM's JSONDatabase would fail to load this directory, or None."""
    try:
        workloads = _json_lines(db_dir / _WORKLOADS)
        records = _json_lines(db_dir / _RECORDS)
    except (ValueError, UnicodeDecodeError) as exc:
        return str(exc)
    for number, record in enumerate(records, start=1):
        ok = isinstance(record, list) and len(record) == 2 and isinstance(record[0], int)
        if not ok or not 0 <= record[0] < len(workloads):
            return f"{_RECORDS} record {number} names no workload of {_WORKLOADS}"
    return None


def _quarantine(db_dir: Path, why: str, progress: Progress) -> None:
    dest = db_dir / time.strftime("corrupt-%Y%m%dT%H%M%SZ", time.gmtime())
    dest.mkdir(exist_ok=True)
    for name in (_WORKLOADS, _RECORDS):
        if (db_dir / name).exists():
            shutil.move(str(db_dir / name), str(dest / name))
    progress(f"tuning: unreadable database ({why}); moved it to {dest}, starting empty")


def _open_database(db_dir: Path, progress: Progress) -> Any:
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    problem = _database_problem(db_dir)
    if problem is not None:
        _quarantine(db_dir, problem, progress)
    try:
        return JSONDatabase(work_dir=str(db_dir))
    except RuntimeError as exc:  # a record TVM cannot parse although the JSON is valid
        _quarantine(db_dir, str(exc).splitlines()[0][:200], progress)
        return JSONDatabase(work_dir=str(db_dir))


def _has_record(database: Any, task: Any) -> bool:
    module = task.dispatched[0]
    if not database.has_workload(module):
        return False
    return database.query_tuning_record(module, task.target, task.task_name) is not None


# -- preparing the module --------------------------------------------------------------------


def _fuse(mod: Any, target: Any) -> Any:
    """Legalize and fuse like the default CPU pipeline, so the tasks are its functions."""
    import tvm
    from tvm import relax

    passes = [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        *relax.pipeline.library_dispatch_passes(target),
        *relax.pipeline.legalize_passes(target),
    ]
    with target:
        return tvm.transform.Sequential(passes)(mod)


def _extract_tasks(fused: Any, target: Any) -> list[Any]:
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    tasks = extract_tasks(fused, target)
    return [t for t in tasks if not t.mod.attrs.get("tirx.is_scheduled", False)]


def _apply(fused: Any, target: Any, database: Any, db_dir: Path) -> Any:
    from tvm.relax.transform import MetaScheduleApplyDatabase

    records = db_dir / _RECORDS
    if records.exists() and b'"Tensorize"' in records.read_bytes():
        import tvm.s_tir.tensor_intrin  # noqa: F401  (traces name registered intrinsics)
    with target, database:
        return MetaScheduleApplyDatabase()(fused)


# -- tuning ----------------------------------------------------------------------------------


def _cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 quota (pod limits)."""
    cpus = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError, IndexError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    return max(1, cpus)


def set_measure_threads(threads: int) -> None:
    """Runner worker initializer: measure with the target's thread count, not the host's."""
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))


def build_candidate(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's default build without ``import tvm.s_tir.tensor_intrin``.

    That import takes ~18 s and the local builder restarts its worker processes for every
    batch; candidates arrive already tensorized, so the registry is not needed here.
    Module-level so that the builder's worker processes can import it by name.
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


@contextlib.contextmanager
def _tuning_logs(db_dir: Path) -> Iterator[logging.Logger]:
    """Send MetaSchedule's logs to ``db_dir/logs/tuning.log`` only, for the duration."""
    logger = logging.getLogger(_MS_LOGGER)
    saved = (logger.level, logger.propagate)
    handler = logging.FileHandler(db_dir / _LOG)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logging.getLogger(f"{_MS_LOGGER}.neofleet")
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _tune_contexts(tasks: Sequence[Any], logger: logging.Logger) -> list[Any]:
    from tvm.s_tir.meta_schedule import TuneContext

    return [
        TuneContext(
            mod=task.dispatched[0],
            target=task.target,
            space_generator="post-order-apply",
            search_strategy="evolutionary",
            task_name=task.task_name,
            num_threads=_cpus(),
            logger=logger.getChild(f"task_{index}"),
        ).clone()
        for index, task in enumerate(tasks)
    ]


def _progress_callback(tally: _Tally, names: Sequence[str], budget: int, progress: Progress) -> Any:
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class _Report(PyMeasureCallback):  # type: ignore[misc]
        def apply(self, _sched: Any, task_id: int, _cand: Any, _built: Any, ran: Any) -> None:
            tally.trials += len(ran)
            times = [_mean_ms(r.run_secs) for r in ran if r.error_msg is None and r.run_secs]
            if times:
                tally.best_ms[task_id] = min([*times, tally.best_ms.get(task_id, times[0])])
            best = tally.best_ms.get(task_id)
            shown = "no valid schedule yet" if best is None else f"best {best:.4f} ms"
            progress(
                f"tuning: {tally.trials}/{budget} trials; task {task_id + 1}/{len(names)} "
                f"{names[task_id]}: {shown}"
            )

    return _Report()


def _mean_ms(run_secs: Sequence[Any]) -> float:
    seconds = [float(getattr(s, "value", s)) for s in run_secs]
    return 1000.0 * sum(seconds) / len(seconds)


def _tune(
    tasks: Sequence[Any], trials: int, database: Any, db_dir: Path, progress: Progress
) -> int:
    """Tune ``tasks`` into ``database`` with ``trials`` spread over them; trials spent."""
    from tvm.s_tir.meta_schedule import builder, measure_callback, runner, tune

    per_task = max(1, trials // len(tasks))
    threads = min(_cpus(), int(tasks[0].target.attrs.get("num-cores", 0)) or _cpus())
    tally = _Tally()
    names = [t.task_name for t in tasks]
    callbacks = [
        *measure_callback.MeasureCallback.create("default"),
        _progress_callback(tally, names, trials, progress),
    ]
    with _tuning_logs(db_dir) as logger:
        tune.tune_tasks(
            tasks=_tune_contexts(tasks, logger),
            task_weights=[float(t.weight) for t in tasks],
            work_dir=str(db_dir),
            max_trials_global=trials,
            max_trials_per_task=per_task,
            num_trials_per_iter=min(_MAX_TRIALS_PER_ITER, per_task),
            builder=builder.LocalBuilder(
                max_workers=min(_cpus(), _MAX_BUILDERS), f_build=build_candidate
            ),
            runner=runner.LocalRunner(initializer=partial(set_measure_threads, threads)),
            database=database,
            measure_callbacks=callbacks,
        )
    return tally.trials


def _check_can_tune(target_json: Mapping[str, Any]) -> None:
    missing = [m for m in _TUNING_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailableError(
            f"MetaSchedule tuning needs {', '.join(missing)} (undeclared by apache-tvm): "
            "install neofleet[compiler]"
        )
    triple = str(target_json.get("mtriple") or "")
    machine = platform.machine()
    if triple and not triple.startswith(machine):
        raise BackendUnavailableError(
            f"cannot measure {triple} code on this {machine} host: tune on a {triple} "
            "machine, or compile with trials=0 to use the records already in the database"
        )


# -- the entry point -------------------------------------------------------------------------


def tune_relax_module(
    mod: Any,
    target: Any,
    *,
    database_root: Path,
    trials: int,
    progress: Progress = lambda _: None,
) -> tuple[Any, TuningReport]:
    """Tune what the target's database lacks, then apply the database to ``mod``.

    ``mod`` is a Relax IRModule as imported by ``from_onnx(..., keep_params_in_input=False)``;
    ``target`` a ``tvm.target.Target`` of kind ``llvm``. Returns the legalized, fused module
    with the best known schedules applied; build it with
    ``tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))``.
    ``trials=0`` tunes nothing and still applies existing records.
    """
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    if target.kind.name != "llvm":
        raise BackendUnavailableError(f"tuning supports llvm (CPU) targets, not {target.kind.name}")
    started = time.monotonic()
    target_json = canonical_target(dict(target.export()))
    db_dir = tuning_database_dir(Path(database_root).resolve(), target_json)
    progress(f"tuning: database {db_dir}")
    fused = _fuse(mod, target)
    tasks = _extract_tasks(fused, target)
    (db_dir / "logs").mkdir(parents=True, exist_ok=True)
    with _locked(db_dir, progress):
        _write_target(db_dir, target_json)
        database = _open_database(db_dir, progress)
        counts = _reuse_or_tune(tasks, trials, database, db_dir, target_json, progress)
    tuned_mod = _apply(fused, target, database, db_dir)
    report = TuningReport(str(db_dir), len(tasks), *counts, time.monotonic() - started)
    progress(
        f"tuning: done in {report.seconds:.1f} s "
        f"({report.tuned_tasks} tasks tuned, {report.trials} trials)"
    )
    return tuned_mod, report


def _reuse_or_tune(
    tasks: Sequence[Any],
    trials: int,
    database: Any,
    db_dir: Path,
    target_json: Mapping[str, Any],
    progress: Progress,
) -> tuple[int, int, int]:
    """Tune the tasks without a record; (reused tasks, tuned tasks, trials spent)."""
    missing = [t for t in tasks if not _has_record(database, t)]
    reused = len(tasks) - len(missing)
    progress(f"tuning: {len(tasks)} tasks, {reused} with records, {len(missing)} without")
    if not missing or trials == 0:
        return reused, 0, 0
    _check_can_tune(target_json)
    progress(f"tuning: {trials} trials over {len(missing)} tasks")
    try:
        spent = _tune(missing, trials, database, db_dir, progress)
    except RuntimeError as exc:
        raise BackendBuildError(f"MetaSchedule tuning failed: {exc}") from exc
    return reused, sum(1 for t in missing if _has_record(database, t)), spent
