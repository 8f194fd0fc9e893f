"""The ``neofleet`` command line: compile | inspect | push | pull | serve | targets | crds |
observe | operator | compile-pod | sandbox.

Progress goes to stderr; ``--json`` puts a machine-readable result on stdout (a compile
pod's termination message uses it). Failures exit non-zero with a one-line reason.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import click

from neofleet.api.compilationjob import BACKENDS
from neofleet.errors import NeofleetError
from neofleet.sandbox.cli import sandbox
from neofleet.telemetry import block_library_telemetry


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _internal(exc: Exception) -> NeofleetError:
    error = NeofleetError(f"unexpected {type(exc).__name__}: {exc}".splitlines()[0])
    error.reason = "InternalError"
    return error


def _key_values(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--compiler-option KEY=VALUE`` pairs as a dict (a key given twice is an error)."""
    from neofleet.compiler.errors import CompilerOptionsError

    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or key.strip() in options:
            raise CompilerOptionsError(f"--compiler-option {pair!r}: expected KEY=VALUE, "
                                       "each key once")
        options[key.strip()] = value.strip()
    return options


def _fail(exc: NeofleetError, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps({"ok": False, "reason": exc.reason, "message": str(exc)}))
    click.echo(f"neofleet: {exc.reason}: {exc}", err=True)
    sys.exit(1)


@click.group()
@click.version_option(package_name="neofleet")
def main() -> None:
    """neofleet: compile models into verified bundles and run them, DLR style."""
    block_library_telemetry()   # ONNX Runtime's and OpenVINO's (neofleet.telemetry)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--framework", required=True,
              type=click.Choice(["onnx", "pytorch", "tflite", "xgboost", "lightgbm", "sklearn",
                                 "treelite"]))
@click.option("--input", "inputs", multiple=True, metavar="NAME:1x3x224x224[:DTYPE]",
              help="Declare an input (repeat for several).")
@click.option("--target", "targets", multiple=True, required=True,
              help="A target from `neofleet targets` (repeat for several).")
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="Bundles are written to OUTPUT/<target>/.")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(BACKENDS))
@click.option("--compiler-option", "compiler_options", multiple=True, metavar="KEY=VALUE",
              help="A backend option (repeat for several), e.g. fp16=true for tensorrt; each "
                   "backend reads its own keys.")
@click.option("--tuning-trials", default=0, show_default=True, type=click.IntRange(min=0),
              help="MetaSchedule trial budget for TVM (host-runnable targets).")
@click.option("--tuning-db", type=click.Path(path_type=Path),
              help="Tuning database root [default: $NEOFLEET_TUNING_DB or "
                   "~/.cache/neofleet/tuning].")
@click.option("--rtol", default=1e-3, show_default=True, type=float)
@click.option("--atol", default=1e-4, show_default=True, type=float)
@click.option("--samples", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--sample-data", type=click.Path(path_type=Path),
              help="Representative inputs: an .npz of named arrays, one per input, each "
                   "with a leading batch of samples (e.g. input_ids 16x1x128 for a 1x128 "
                   "input); candidates are verified on them (up to 32) and timed on the "
                   "first. Tree models also take a .npy of rows (rows x features), used for "
                   "branch annotation too.")
@click.option("--toolchain-timeout", default=900.0, show_default=True,
              type=click.FloatRange(min=1), help="Seconds each C compiler run may take.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def compile(model: Path, framework: str, inputs: tuple[str, ...], targets: tuple[str, ...],
            output: Path, backend: str, compiler_options: tuple[str, ...], tuning_trials: int,
            tuning_db: Path | None, rtol: float, atol: float, samples: int,
            sample_data: Path | None, toolchain_timeout: float, as_json: bool) -> None:
    """Compile MODEL into one verified bundle per target."""
    from neofleet.compiler.inputs import parse_input_decl
    from neofleet.compiler.pipeline import CompileRequest, compile_model, default_tuning_db
    from neofleet.compiler.verify import Tolerance

    try:
        request = CompileRequest(
            model=model, framework=framework, inputs=[parse_input_decl(i) for i in inputs],
            targets=list(targets), output=output, backend=backend, tuning_trials=tuning_trials,
            tuning_db=tuning_db or default_tuning_db(),
            tolerance=Tolerance(rtol=rtol, atol=atol, samples=samples), sample_data=sample_data,
            toolchain_timeout_s=toolchain_timeout, progress=_progress,
            compiler_options=_key_values(compiler_options))
        result = compile_model(request)
    except NeofleetError as exc:
        _fail(exc, as_json)
    except Exception as exc:  # a bug: keep the traceback, still end with one reason line
        traceback.print_exc()
        _fail(_internal(exc), as_json)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=None))
    else:
        _print_compile_summary(result.to_json())
    if not result.ok:
        failed = [t for t in result.targets if t.error is not None]
        first = failed[0].error
        assert first is not None
        click.echo(f"neofleet: {first.reason}: {len(failed)} target(s) failed: "
                   f"{failed[0].target}: {first}", err=True)
        sys.exit(1)


def _print_compile_summary(doc: dict[str, Any]) -> None:
    for row in doc["targets"]:
        if row["status"] != "Succeeded":
            click.echo(f"{row['target']:<18} FAILED  {row['reason']}: {row['message']}")
            continue
        bench = row["benchmark"]
        latency = f"{bench['median_ms']:.3f} ms" if bench else "not timed here"
        verification = row["verification"]
        if verification["max_abs_error"] is None:  # a GPU bundle built without its GPU
            checked = f"NOT verified on hardware ({verification['method']})"
        else:
            checked = (f"verified ({verification['method']}, max abs err "
                       f"{verification['max_abs_error']:.2e})")
        click.echo(f"{row['target']:<18} {row['backend']:<12} {checked}  {latency}  "
                   f"{row['bundle']}  {row['digest'][:19]}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def inspect(bundle: Path, as_json: bool) -> None:
    """Verify BUNDLE and show what it holds."""
    from neofleet.bundle import open_bundle

    try:
        opened = open_bundle(bundle)
    except NeofleetError as exc:
        _fail(exc, as_json)
    meta = opened.meta.model_dump(by_alias=True, mode="json")
    if as_json:
        click.echo(json.dumps({"ok": True, "digest": opened.digest,
                               "manifest": json.loads(opened.manifest.to_bytes()),
                               "meta": meta}))
        return
    section = opened.meta.neofleet
    click.echo(f"bundle   {opened.path}  (verified, {len(opened.manifest.files)} files)")
    click.echo(f"digest   {opened.digest}")
    click.echo(f"target   {opened.meta.requirements.target_device} "
               f"({opened.meta.requirements.target_arch}, "
               f"{opened.meta.requirements.target_device_type})")
    click.echo(f"backend  {section.backend}  {section.compiler}")
    for spec in opened.meta.model.inputs:
        click.echo(f"input    {spec.name} {spec.shape} {spec.dtype}")
    for spec in opened.meta.model.outputs:
        click.echo(f"output   {spec.name} {spec.shape} {spec.dtype}")
    v = section.verification
    click.echo(f"verified {v.passed} ({v.method}, {v.samples} samples, max abs "
               f"{v.max_abs_error}, max rel {v.max_rel_error})")
    for key in ("samples", "graph", "notes"):
        if key in section.source:
            click.echo(f"{key:<8} {section.source[key]}")
    if v.hardware_verified is not None:
        click.echo(f"hardware {'verified on the GPU' if v.hardware_verified else 'NOT verified'}"
                   f"{': ' + v.message if v.message else ''}")
    if section.benchmark:
        click.echo(f"latency  {section.benchmark.median_ms:.3f} ms median on "
                   f"{section.benchmark.host}")
    for cand in section.candidates:
        click.echo(f"candidate {cand.backend:<12} {cand.status:<15} {cand.message}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True)
def push(bundle: Path, reference: str, as_json: bool) -> None:
    """Push BUNDLE to an OCI registry (oci://HOST/REPO[:TAG]); prints the digest URI."""
    from neofleet.bundle.oci import push_bundle

    try:
        result = push_bundle(bundle, reference)
    except NeofleetError as exc:
        _fail(exc, as_json)
    if as_json:
        click.echo(json.dumps({"ok": True, "uri": result.uri, "digest": result.manifest_digest,
                               "bundle_digest": result.bundle_digest}))
    else:
        click.echo(result.uri)


@main.command()
@click.argument("reference")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def pull(reference: str, dest: Path, as_json: bool) -> None:
    """Pull oci://HOST/REPO@sha256:… into DEST, verifying every digest."""
    from neofleet.bundle.oci import pull_bundle

    try:
        bundle = pull_bundle(reference, dest)
    except NeofleetError as exc:
        _fail(exc, as_json)
    if as_json:
        click.echo(json.dumps({"ok": True, "path": str(bundle.path), "digest": bundle.digest}))
    else:
        click.echo(f"{bundle.path}  {bundle.digest}")


@main.command()
@click.argument("source", metavar="BUNDLE_DIR|oci://HOST/REPO@sha256:…")
@click.option("--name", help="Model name in the URLs and metrics [env NEOFLEET_MODEL_NAME; "
                             "default: the source model's file name, else the folder's name].")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--threads", type=click.IntRange(min=1),
              help="Worker threads running the model, also the backend's threads "
                   "[default: min(4, CPUs), backend's own thread count].")
@click.option("--max-batch", type=click.IntRange(min=1),
              help="Dynamic batching: up to this many rows per run (at most the bundle's "
                   "batch size, dim 0 of its inputs).")
@click.option("--batch-timeout-ms", type=click.FloatRange(min=0),
              help="How long a batch waits for more requests [5].")
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(min=1),
              help="Inference requests in flight; more are answered 503.")
@click.option("--max-body-bytes", default=64 << 20, show_default=True,
              type=click.IntRange(min=1), help="Larger request bodies are answered 413.")
@click.option("--revision", help="Revision label and model version [env NEOFLEET_REVISION; "
                                 "default: 12 hex digits of the bundle digest].")
@click.option("--pool", help="Pool label [env NEOFLEET_POOL; default: default].")
@click.option("--target", help="Target label [env NEOFLEET_TARGET; default: the bundle's "
                               "Requirements.TargetDevice].")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              help="Where oci:// bundles are pulled to [$NEOFLEET_CACHE/bundles or "
                   "~/.cache/neofleet/bundles].")
@click.option("--drain-seconds", default=10, show_default=True, type=click.IntRange(min=0),
              help="On SIGTERM, how long requests in flight may take to finish.")
@click.option("--shutdown-delay-seconds", type=click.FloatRange(min=0),
              help="On SIGTERM, how long to keep serving with readiness 503 before the drain "
                   "[env NEOFLEET_SHUTDOWN_DELAY; default: 0].")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(source: str, name: str | None, host: str, port: int, threads: int | None,
          max_batch: int | None, batch_timeout_ms: float | None, max_queue: int,
          max_body_bytes: int, revision: str | None, pool: str | None, target: str | None,
          cache_dir: Path | None, drain_seconds: int, shutdown_delay_seconds: float | None,
          log_level: str) -> None:
    """Serve a bundle over the Open Inference Protocol v2 (REST) with /metrics."""
    from neofleet.runtime.server.run import serve as run_server
    from neofleet.runtime.server.settings import ServeOptions

    options = ServeOptions(
        source=source, name=name, host=host, port=port, threads=threads, max_batch=max_batch,
        batch_timeout_ms=batch_timeout_ms, max_queue=max_queue, max_body_bytes=max_body_bytes,
        revision=revision, pool=pool, target=target, cache_dir=cache_dir,
        drain_seconds=drain_seconds, shutdown_delay_seconds=shutdown_delay_seconds,
        log_level=log_level)
    try:
        run_server(options)
    except NeofleetError as exc:
        _fail(exc, False)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def targets(as_json: bool) -> None:
    """List the target catalogue."""
    from neofleet.compiler.targets import catalogue, host_can_run

    rows = list(catalogue())
    if as_json:
        click.echo(json.dumps([t.descriptor() for t in rows]))
        return
    for t in rows:
        here = "runs here" if host_can_run(t) else ("emulated" if t.arch == "aarch64"
                                                   and t.device_type == "cpu" else "")
        built = "" if t.buildable else " (listed, not buildable)"
        click.echo(f"{t.name:<18} {t.arch:<8} {t.device_type:<4} "
                   f"{','.join(t.backends):<22} {here:<10} {t.description}{built}")


main.add_command(sandbox)


@main.command("compile-pod")
@click.option("--result", type=click.Path(path_type=Path), default=Path("/dev/termination-log"),
              show_default=True, help="Where the result JSON goes (the termination message).")
def compile_pod(result: Path) -> None:
    """Run the compile request in $NEOFLEET_COMPILE_REQUEST (what a compile pod runs)."""
    from neofleet.compiler.pod import main as run_pod

    sys.exit(run_pod(result))


@main.command()
@click.option("--namespace", "namespaces", multiple=True,
              help="Watch these namespaces (repeatable); default: the whole cluster.")
@click.option("--compiler-image", default="ghcr.io/neofleet/neofleet-compiler:0.1.0",
              show_default=True, envvar="NEOFLEET_COMPILER_IMAGE")
@click.option("--liveness", default=None, metavar="URL",
              help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
@click.option("--metrics-port", type=int, default=None, help="Serve /metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--prometheus-url", default=None, envvar="NEOFLEET_PROMETHEUS_URL",
              help="Prometheus for canary analysis (spec.rollout…analysis.prometheus wins).")
@click.option("--leader-election-lease", default=None, metavar="NAMESPACE/NAME",
              help="Act only while holding this coordination.k8s.io Lease (several "
              "replicas); default: no election, the only replica acts.")
@click.option("--leader-identity", default=None, envvar="POD_NAME",
              help="This replica's name in the Lease [default: $POD_NAME or the host name, "
              "plus the process id].")
@click.option("--lease-duration", default=15, show_default=True, type=click.IntRange(3, 300),
              help="Seconds a Lease stays held without renewal; a leader stops after 2/3 "
              "of it without a renewal.")
def operator(namespaces: tuple[str, ...], compiler_image: str, liveness: str | None,
             metrics_port: int | None, metrics_host: str, prometheus_url: str | None,
             leader_election_lease: str | None, leader_identity: str | None,
             lease_duration: int) -> None:
    """Run the neofleet operator (kopf) against the cluster of $KUBECONFIG or in-cluster."""
    from neofleet.operator.main import Options, lease_config, run

    lease = None
    if leader_election_lease is not None:
        try:
            lease = lease_config(leader_election_lease, leader_identity, lease_duration)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--leader-election-lease") from exc
    run(Options(namespaces, compiler_image, liveness, metrics_port, metrics_host,
                prometheus_url, lease))


@main.command()
@click.option("--output", type=click.Path(path_type=Path), default=Path("crds"),
              show_default=True, help="Folder to write the CRD YAML files to.")
@click.option("--chart", type=click.Path(path_type=Path), default=Path("charts/neofleet"),
              show_default=True, help="Helm chart to refresh: its crds/ and "
              "files/rbac-rules.yaml ('' to skip).")
def crds(output: Path, chart: Path) -> None:
    """Write the CompilationJob and EdgeModelDeployment CRDs generated from neofleet.api,
    and the chart's copies of them and of the operator's RBAC rules."""
    from neofleet.api.crd import write_crds
    from neofleet.operator.rbac import write_rules

    written = write_crds(output)
    if str(chart):
        written += write_crds(chart / "crds")
        written.append(write_rules(chart / "files" / "rbac-rules.yaml"))
    for path in written:
        click.echo(str(path))


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("charts/neofleet/files"),
              show_default=True, help="Folder to write the two files to.")
def observe(out: Path) -> None:
    """Write the Grafana dashboard and the Prometheus alert rules generated from
    neofleet.observe (grafana-dashboard.json, prometheus-rules.yaml)."""
    from neofleet.observe.generate import write_files

    for path in write_files(out):
        click.echo(str(path))

if __name__ == "__main__":
    main()
