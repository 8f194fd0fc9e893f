"""Runs one pod's containers as local processes, probes them, restarts them by policy.

One ``PodRunner`` thread per pod. It reports every change of the pod's container states
through a callback (the agent patches the Pod's status); it never talks to the API itself.
Each container is a process group started in its own session with the pod's env, in its
own work folder, stdout/stderr to files beside it; its PID is written next to them so that
``neofleet sandbox down`` can stop what an agent that died left behind.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from neofleet.sandbox.agent.podplan import ContainerPlan, PodPlan, Probe
from neofleet.sandbox.agent.status import ContainerState, termination_message
from neofleet.sandbox.processes import signal_group

Report = Callable[[list[ContainerState]], None]
BACKOFF_START_S, BACKOFF_MAX_S = 1.0, 60.0   # the kubelet's are 10 s and 300 s


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Container:
    def __init__(self, plan: ContainerPlan, image: str) -> None:
        self.plan = plan
        self.state = ContainerState(name=plan.name, image=image)
        self.process: subprocess.Popen[bytes] | None = None
        self.next_probe = 0.0
        self.probe_failures = 0
        self.restart_at: float | None = None


class PodRunner(threading.Thread):
    """Start, watch and stop the processes of one pod."""

    def __init__(self, plan: PodPlan, images: dict[str, str], report: Report) -> None:
        super().__init__(name=f"pod-{plan.namespace}-{plan.name}", daemon=True)
        self.plan = plan
        self.report = report
        self.containers = [_Container(c, images[c.name]) for c in plan.containers]
        self.stopping = threading.Event()
        self.finished = threading.Event()

    @property
    def states(self) -> list[ContainerState]:
        return [c.state for c in self.containers]

    def run(self) -> None:
        try:
            self._prepare()
            for container in self.containers:
                self._start(container)
            self.report(self.states)
            while not self.stopping.wait(0.1):
                if self._step():
                    self.report(self.states)
                if self._done():
                    break
        finally:
            self._kill_all()
            self.finished.set()

    def stop(self) -> None:
        self.stopping.set()

    def _prepare(self) -> None:
        for folder in self.plan.folders:
            folder.mkdir(parents=True, exist_ok=True)
        for path, data in self.plan.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for container in self.plan.containers:
            container.termination_path.parent.mkdir(parents=True, exist_ok=True)

    def _start(self, container: _Container) -> None:
        plan, state = container.plan, container.state
        plan.termination_path.write_bytes(b"")
        folder = plan.termination_path.parent
        try:
            with (folder / "stdout.log").open("ab") as out, \
                    (folder / "stderr.log").open("ab") as err:
                container.process = subprocess.Popen(
                    plan.argv, cwd=plan.cwd, env=plan.env, stdin=subprocess.DEVNULL,
                    stdout=out, stderr=err, start_new_session=True)
        except OSError as exc:
            state.state, state.reason, state.message = "waiting", "RunContainerError", str(exc)
            return
        (folder / "pid").write_text(str(container.process.pid))
        state.state, state.reason, state.message = "running", "", ""
        state.started_at, state.ready = utc_now(), plan.readiness is None
        container.next_probe = time.monotonic() + (
            plan.readiness.initial_delay_s if plan.readiness else 0.0)
        container.probe_failures = 0

    def _step(self) -> bool:
        changed = False
        for container in self.containers:
            changed |= self._check_exit(container)
            changed |= self._maybe_restart(container)
            changed |= self._maybe_probe(container)
        return changed

    def _check_exit(self, container: _Container) -> bool:
        process = container.process
        if process is None or process.poll() is None:
            return False
        state = container.state
        code = process.returncode
        state.state, state.ready = "terminated", False
        state.exit_code = code if code >= 0 else 128 - code
        state.reason = "Completed" if code == 0 else "Error"
        state.finished_at = utc_now()
        state.message = termination_message(_read(container.plan.termination_path))
        container.process = None
        if self._restarts(code):
            delay = min(BACKOFF_START_S * 2 ** state.restart_count, BACKOFF_MAX_S)
            container.restart_at = time.monotonic() + delay
        return True

    def _restarts(self, code: int) -> bool:
        policy = self.plan.restart_policy
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    def _maybe_restart(self, container: _Container) -> bool:
        if container.restart_at is None or time.monotonic() < container.restart_at:
            return False
        container.restart_at = None
        state = container.state
        state.last_terminated = state._state_detail()
        state.restart_count += 1
        self._start(container)
        return True

    def _maybe_probe(self, container: _Container) -> bool:
        probe = container.plan.readiness
        if probe is None or container.process is None or time.monotonic() < container.next_probe:
            return False
        container.next_probe = time.monotonic() + probe.period_s
        ok = run_probe(probe, container.plan)
        container.probe_failures = 0 if ok else container.probe_failures + 1
        ready = ok or (container.state.ready and container.probe_failures < probe.failure_threshold)
        changed = ready != container.state.ready
        container.state.ready = ready
        return changed

    def _done(self) -> bool:
        return all(c.state.state == "terminated" and c.restart_at is None
                   for c in self.containers)

    def _kill_all(self) -> None:
        running = [c.process for c in self.containers if c.process is not None]
        for process in running:
            signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.plan.grace_s
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(process.pid, signal.SIGKILL)
                process.wait()
            # whatever the group left behind
            signal_group(process.pid, signal.SIGKILL)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def run_probe(probe: Probe, container: ContainerPlan) -> bool:
    """One readiness check: HTTP 200-399, a TCP connect, or a command exiting 0."""
    try:
        if probe.kind == "http":
            url = f"http://127.0.0.1:{probe.port}{probe.path}"
            with urllib.request.urlopen(url, timeout=probe.timeout_s) as response:
                return 200 <= int(response.status) < 400
        if probe.kind == "tcp":
            with socket.create_connection(("127.0.0.1", probe.port), timeout=probe.timeout_s):
                return True
        result = subprocess.run(probe.command, cwd=container.cwd, env=container.env,
                                capture_output=True, timeout=probe.timeout_s, check=False)
        return result.returncode == 0
    except (OSError, urllib.error.URLError, subprocess.TimeoutExpired):
        return False
