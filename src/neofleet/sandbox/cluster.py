"""Start and stop a throwaway cluster on 127.0.0.1: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and the node agent, all on free ports.

``DIR/state.json`` records every process (PID, the word its command line must contain,
port), so ``down`` stops exactly what ``up`` started, by PID, and then the processes of
pods a dead agent may have left behind. ``up`` stops what it started when it fails.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from neofleet.sandbox import build, kube, processes
from neofleet.sandbox.errors import ClusterError, StateError
from neofleet.sandbox.kubeconfig import write_cert_kubeconfig
from neofleet.sandbox.pki import Pki, make_pki
from neofleet.sandbox.pools import load_pools

STATE = "state.json"
STOP_ORDER = ("agent", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


@dataclass
class Component:
    name: str
    pid: int
    expected: str       # a word the process's command line contains
    port: int


@dataclass
class Sandbox:
    folder: Path
    server: str
    components: list[Component]
    timings_s: dict[str, float] = field(default_factory=dict)
    # the processes this Python process started (not saved): stopped through their Popen
    # when ``up`` fails, since right after a fork /proc may not show the new program yet
    children: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def kubeconfig(self) -> Path:
        return self.folder / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return self.folder / "operator.kubeconfig"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log of the operator ServiceAccount's requests (JSON lines)."""
        return self.folder / "logs" / "audit.log"

    def save(self) -> None:
        data = {"server": self.server, "components": [asdict(c) for c in self.components],
                "timings_s": self.timings_s}
        (self.folder / STATE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Sandbox:
        try:
            data = json.loads((folder / STATE).read_text())
        except (OSError, ValueError) as exc:
            raise StateError(f"no sandbox in {folder} ({exc})") from exc
        return cls(folder, data["server"], [Component(**c) for c in data["components"]],
                   data.get("timings_s", {}))

    def running(self) -> dict[str, bool]:
        return {c.name: processes.alive(c.pid, c.expected) for c in self.components}


def up(folder: Path, pools_file: Path | None = None, cache_root: Path | None = None,
       rbac: list[Path] | None = None) -> Sandbox:
    """Build (or reuse) the binaries and start a cluster; returns once it accepts pods."""
    folder = folder.resolve()
    _refuse_running(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pools = load_pools(pools_file)
    started = time.monotonic()
    binaries = build.control_plane_binaries(cache_root)
    sandbox = Sandbox(folder, "", [])
    sandbox.timings_s["binaries"] = round(time.monotonic() - started, 2)
    try:
        _start_all(sandbox, binaries, pools_file)
        nodes = sum(pool.nodes for pool in pools)
        agent = sandbox.children[-1]
        try:
            kube.wait_ready(sandbox.kubeconfig, nodes, timeout_s=90,
                            agent_running=lambda: agent.poll() is None)
        except ClusterError as exc:
            raise ClusterError(f"{exc}{processes.log_tail(folder / 'logs' / 'agent.log')}"
                               ) from exc
        kube.make_operator_kubeconfig(sandbox.kubeconfig, sandbox.operator_kubeconfig,
                                      Pki(folder / "pki"), sandbox.server, rbac or [])
    except BaseException:
        for child in sandbox.children:
            processes.stop_child(child)
        down(folder)
        raise
    sandbox.timings_s["ready"] = round(time.monotonic() - started, 2)
    sandbox.save()
    return sandbox


def _refuse_running(folder: Path) -> None:
    if (folder / STATE).exists():
        existing = Sandbox.load(folder)
        if any(existing.running().values()):
            raise StateError(f"a sandbox is already running in {folder}; "
                             f"`neofleet sandbox down --dir {folder}` first")
        down(folder)


def _start_all(sandbox: Sandbox, binaries: Path, pools_file: Path | None) -> None:
    folder = sandbox.folder
    logs = folder / "logs"
    shutil.rmtree(folder / "pki", ignore_errors=True)
    pki = make_pki(folder / "pki")
    etcd = _start_etcd(sandbox, logs)
    api_port = processes.free_port()
    sandbox.server = f"https://127.0.0.1:{api_port}"
    _start_apiserver(sandbox, binaries, pki, etcd, api_port, logs)
    write_cert_kubeconfig(sandbox.kubeconfig, sandbox.server, pki, "admin")
    for name, stem in (("kube-controller-manager", "controller-manager"),
                       ("kube-scheduler", "scheduler")):
        config = write_cert_kubeconfig(folder / "pki" / f"{stem}.kubeconfig", sandbox.server,
                                       pki, stem)
        _start_controller(sandbox, binaries / name, config, pki, logs)
    _start_agent(sandbox, pools_file, logs)
    sandbox.save()


def _launch(sandbox: Sandbox, name: str, argv: list[str], port: int, logs: Path,
            env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    process = processes.start(argv, logs / f"{name}.log", env)
    expected = "neofleet.sandbox.agent" if name == "agent" else Path(argv[0]).name
    sandbox.children.append(process)
    sandbox.components.append(Component(name, process.pid, expected, port))
    sandbox.save()
    return process


def _start_etcd(sandbox: Sandbox, logs: Path) -> int:
    client, peer, metrics = (processes.free_port() for _ in range(3))
    data = sandbox.folder / "etcd"
    shutil.rmtree(data, ignore_errors=True)
    argv = [str(build.etcd_binary()), "--name", "sandbox", "--data-dir", str(data),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"sandbox=http://127.0.0.1:{peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{metrics}", "--unsafe-no-fsync"]
    process = _launch(sandbox, "etcd", argv, client, logs)
    processes.wait_for(lambda: processes.http_ok(f"http://127.0.0.1:{client}/health"),
                       "etcd", 30, logs / "etcd.log", process)
    return client


def _start_apiserver(sandbox: Sandbox, binaries: Path, pki: Pki, etcd: int, port: int,
                     logs: Path) -> None:
    issuer = "https://kubernetes.default.svc.cluster.local"
    argv = [str(binaries / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd}",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            "--advertise-address=127.0.0.1", "--insecure-port=0",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--client-ca-file={pki.crt('ca')}", f"--tls-cert-file={pki.crt('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--service-account-key-file={pki.folder / 'service-account.pub'}",
            f"--service-account-signing-key-file={pki.key('service-account')}",
            f"--service-account-issuer={issuer}", f"--api-audiences={issuer}",
            "--authorization-mode=RBAC", "--endpoint-reconciler-type=none",
            # GPU pods tolerate the GPU pool's taint, as on GKE and with the NVIDIA operator
            "--enable-admission-plugins=ExtendedResourceToleration",
            "--profiling=false",
            # every request of the operator's ServiceAccount, so tests can compare the
            # permissions it used with those its RBAC grants
            f"--audit-policy-file={_audit_policy(sandbox)}",
            f"--audit-log-path={sandbox.audit_log}", "--audit-log-format=json",
            "--audit-log-maxbackup=1"]
    process = _launch(sandbox, "kube-apiserver", argv, port, logs)
    context = _admin_context(pki)
    processes.wait_for(lambda: processes.https_ok(f"{sandbox.server}/readyz", context),
                       "kube-apiserver", 60, logs / "kube-apiserver.log", process)


def _audit_policy(sandbox: Sandbox) -> Path:
    account = f"system:serviceaccount:{kube.OPERATOR_NAMESPACE}:{kube.OPERATOR_ACCOUNT}"
    policy = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
              "omitStages": ["RequestReceived"],
              "rules": [{"level": "Metadata", "users": [account]}, {"level": "None"}]}
    path = sandbox.folder / "audit-policy.json"
    path.write_text(json.dumps(policy))
    return path


def _admin_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.crt("ca")))
    context.load_cert_chain(str(pki.crt("admin")), str(pki.key("admin")))
    return context


def _start_controller(sandbox: Sandbox, binary: Path, config: Path, pki: Pki,
                      logs: Path) -> None:
    port = processes.free_port()
    argv = [str(binary), f"--kubeconfig={config}", f"--authentication-kubeconfig={config}",
            f"--authorization-kubeconfig={config}", "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--port=0",
            "--profiling=false"]
    if binary.name == "kube-controller-manager":
        plugins = sandbox.folder / "flex-volume-plugins"
        plugins.mkdir(exist_ok=True)
        argv += ["--controllers=*", "--use-service-account-credentials=true",
                 f"--service-account-private-key-file={pki.key('service-account')}",
                 f"--root-ca-file={pki.crt('ca')}",
                 f"--cluster-signing-cert-file={pki.crt('ca')}",
                 f"--cluster-signing-key-file={pki.key('ca')}",
                 f"--flex-volume-plugin-dir={plugins}"]
    process = _launch(sandbox, binary.name, argv, port, logs)
    processes.wait_for(lambda: processes.port_open(port), binary.name, 60,
                       logs / f"{binary.name}.log", process)


def _start_agent(sandbox: Sandbox, pools_file: Path | None, logs: Path) -> None:
    argv = [sys.executable, "-m", "neofleet.sandbox.agent", "--dir", str(sandbox.folder)]
    if pools_file is not None:
        argv += ["--pools", str(pools_file.resolve())]
    _launch(sandbox, "agent", argv, 0, logs)


def down(folder: Path) -> list[str]:
    """Stop everything ``up`` started in ``folder``; the names of what was running."""
    folder = folder.resolve()
    try:
        sandbox = Sandbox.load(folder)
    except StateError:
        return []
    was_running = [name for name, alive in sandbox.running().items() if alive]
    by_name = {c.name: c for c in sandbox.components}
    for name in STOP_ORDER:
        if name in by_name:
            component = by_name[name]
            processes.stop(component.pid, component.expected,
                           timeout_s=40 if name == "agent" else 10)
    _stop_orphan_pods(folder)
    (folder / STATE).unlink(missing_ok=True)
    busy = [c.port for c in sandbox.components if c.port and processes.port_open(c.port)]
    if busy:
        raise ClusterError(f"ports still open after down: {busy}")
    return was_running


def _stop_orphan_pods(folder: Path) -> None:
    for pid_file in folder.glob("pods/*/containers/*/pid"):
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if processes.cwd_within(pid, folder):
            processes.stop(pid, "", timeout_s=5)


def status(folder: Path) -> dict[str, object]:
    sandbox = Sandbox.load(folder.resolve())
    return {"server": sandbox.server, "kubeconfig": str(sandbox.kubeconfig),
            "components": {c.name: {"pid": c.pid, "port": c.port,
                                    "running": processes.alive(c.pid, c.expected)}
                           for c in sandbox.components},
            "timings_s": sandbox.timings_s}
