"""A Pod → the local processes that stand in for its containers (pure).

What maps to what (documented in the README's sandbox section):

- **image → entry point**: the repository's last path component, without tag or digest.
  ``neofleet-compiler``, ``neofleet-runtime`` and ``neofleet-operator`` run the neofleet
  command line (``python -m neofleet.cli`` of the agent's own interpreter), so their
  ``args`` are the CLI's (``compile …``, ``serve …``). ``busybox`` and
  ``sandbox.neofleet.io/host`` run ``command`` with the host's tools (for tests). Any
  other image fails the pod with ``ErrImagePull`` and a message naming the known images.
- **node architecture**: on a node whose ``kubernetes.io/arch`` is not this machine's
  (an arm64 pool on x86_64), ``neofleet-runtime`` runs on a ``Guest``, an emulated
  interpreter of the node's architecture (the agent's is qemu-aarch64 with the emulated
  aarch64 Python, which holds the runtime's packages); ``guest`` is passed in (it looks
  for the emulator), the decision is made here. A ``command`` other than
  ``neofleet``/``python`` in such a container is refused (the guest has only Python), and
  so is the pod when no guest is usable (``CreateContainerConfigError`` saying why): it
  never falls back to this machine's CPU. ``neofleet-compiler`` (whose output does not
  depend on the CPU it runs on: aarch64 targets are cross-compiled and verified under
  qemu anyway), ``neofleet-operator`` and host images run natively on every node.
- **volumes → folders** under the pod's folder: ``emptyDir``, ``configMap`` and ``secret``
  (files written from the objects), ``persistentVolumeClaim`` (one folder per claim in the
  sandbox, shared by the pods that mount it). Every container path (mount paths and the
  termination-message path) that appears in ``command``, ``args`` or env values, as a
  whole word, is rewritten to its host path.
- **ports**: each declared ``containerPort`` gets a free host port; ``--port N`` /
  ``--port=N`` in args and probe ports naming a container port are rewritten, and
  ``PORT`` holds the first one.
"""

from __future__ import annotations

import base64
import platform
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from neofleet.sandbox.errors import PodSpecError

NEOFLEET_IMAGES = frozenset({"neofleet-compiler", "neofleet-runtime", "neofleet-operator"})
EMULATED_IMAGES = frozenset({"neofleet-runtime"})   # run on a Guest on a foreign-arch node
HOST_IMAGES = frozenset({"busybox", "sandbox.neofleet.io/host"})
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
PASSED_HOST_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")

# (kind, namespace, name) -> the object's data as str -> bytes, or None when it is missing.
Lookup = Callable[[str, str, str], Mapping[str, bytes] | None]


@dataclass(frozen=True)
class Guest:
    """An emulated interpreter for a node architecture this machine's CPU is not."""

    python: tuple[str, ...]      # the command that starts its Python
    env: Mapping[str, str]       # what that Python needs; set last, never path-rewritten
    emulator: str                # for messages, e.g. "qemu-aarch64-static"


# a node architecture (kubernetes.io/arch) -> its Guest; raises PodSpecError when unusable
GuestLookup = Callable[[str], Guest]


def kube_arch(machine: str) -> str:
    """``platform.machine()`` as a ``kubernetes.io/arch`` value."""
    machine = machine.lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


HOST_ARCH = kube_arch(platform.machine())


def no_guest(arch: str) -> Guest:
    raise PodSpecError("CreateContainerConfigError",
                       f"the runtime on this {arch} node needs an emulator of its CPU, and "
                       "the agent has none")


def needs_guest(image: str, node_arch: str, host_arch: str) -> bool:
    """Whether a container of ``image`` runs emulated on a ``node_arch`` node."""
    return _image_name(image) in EMULATED_IMAGES and node_arch != host_arch


@dataclass(frozen=True)
class Probe:
    kind: str                    # "http" | "tcp" | "exec"
    port: int = 0
    path: str = "/"
    command: tuple[str, ...] = ()
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    termination_path: Path
    readiness: Probe | None
    emulator: str = ""           # the Guest's emulator when it runs emulated


@dataclass(frozen=True)
class PodPlan:
    uid: str
    namespace: str
    name: str
    folder: Path
    ports: dict[int, int]                     # container port -> host port
    containers: tuple[ContainerPlan, ...]
    files: dict[Path, bytes] = field(default_factory=dict)   # configMap/secret contents
    folders: tuple[Path, ...] = ()                           # emptyDir, pvc, work dirs
    restart_policy: str = "Always"
    grace_s: float = 30.0


def image_kind(image: str) -> str:
    """``neofleet`` or ``host``; raises PodSpecError(ErrImagePull) for anything else."""
    repository = re.split(r"[@]", image, maxsplit=1)[0]
    last = _image_name(image)
    if last in NEOFLEET_IMAGES:
        return "neofleet"
    if last in HOST_IMAGES or repository.split(":", 1)[0] in HOST_IMAGES:
        return "host"
    known = ", ".join(sorted(NEOFLEET_IMAGES | HOST_IMAGES))
    raise PodSpecError("ErrImagePull", f"the sandbox cannot run image {image!r}: it runs "
                       f"pods as local processes and knows only {known}")


def _image_name(image: str) -> str:
    """The repository's last path component, without tag or digest."""
    repository = re.split(r"[@]", image, maxsplit=1)[0]
    return repository.rsplit("/", 1)[-1].split(":", 1)[0]


def plan_pod(pod: Mapping[str, Any], folder: Path, host_ports: list[int], lookup: Lookup,
             host_env: Mapping[str, str], *, node_arch: str = HOST_ARCH,
             host_arch: str = HOST_ARCH, guest: GuestLookup = no_guest) -> PodPlan:
    """Everything needed to start the pod's containers; raises PodSpecError.

    ``node_arch``: the ``kubernetes.io/arch`` of the pod's node; where it differs from
    ``host_arch``, ``neofleet-runtime`` containers run on ``guest(node_arch)``.
    """
    meta, spec = pod["metadata"], pod["spec"]
    if spec.get("initContainers"):
        raise PodSpecError("CreateContainerConfigError",
                           "init containers are not simulated by the sandbox node agent")
    hooked = [c["name"] for c in spec["containers"] if c.get("lifecycle")]
    if hooked:
        raise PodSpecError("CreateContainerConfigError",
                           f"lifecycle hooks (postStart/preStop) of {hooked} are not simulated "
                           "by the sandbox node agent; neofleet's runtime drains on SIGTERM "
                           "with --shutdown-delay-seconds instead")
    declared = [int(p["containerPort"]) for c in spec["containers"] for p in c.get("ports", [])]
    if len(host_ports) < len(declared):
        raise PodSpecError("CreateContainerConfigError", "not enough host ports given")
    ports = dict(zip(declared, host_ports, strict=False))
    volumes, files, folders = _volumes(spec.get("volumes", []), meta["namespace"], folder,
                                       lookup)
    arch = _Arch(node_arch, host_arch, guest)
    containers = tuple(_container(c, pod, folder, ports, volumes, lookup, host_env, arch)
                       for c in spec["containers"])
    return PodPlan(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"],
                   folder=folder, ports=ports, containers=containers, files=files,
                   folders=(*folders, *(c.cwd for c in containers)),
                   restart_policy=spec.get("restartPolicy", "Always"),
                   grace_s=float(meta.get("deletionGracePeriodSeconds")
                                 or spec.get("terminationGracePeriodSeconds", 30)))


def _volumes(volumes: list[dict[str, Any]], namespace: str, folder: Path,
             lookup: Lookup) -> tuple[dict[str, Path], dict[Path, bytes], list[Path]]:
    paths: dict[str, Path] = {}
    files: dict[Path, bytes] = {}
    folders: list[Path] = []
    for volume in volumes:
        name = volume["name"]
        path = folder / "volumes" / name
        if "emptyDir" in volume:
            folders.append(path)
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            path = folder.parent.parent / "claims" / namespace / claim
            folders.append(path)
        elif "configMap" in volume or "secret" in volume:
            kind = "configmap" if "configMap" in volume else "secret"
            source = volume.get("configMap") or volume["secret"]
            ref = source.get("name") or source.get("secretName", "")
            data = lookup(kind, namespace, ref)
            if data is None and not source.get("optional", False):
                raise PodSpecError("CreateContainerConfigError",
                                   f"{kind} {namespace}/{ref} of volume {name} not found")
            folders.append(path)
            files.update(_projected(path, data or {}, source.get("items")))
        else:
            kinds = sorted(set(volume) - {"name"})
            raise PodSpecError("CreateContainerConfigError",
                               f"volume {name}: {kinds} volumes are not simulated (emptyDir, "
                               "configMap, secret and persistentVolumeClaim are)")
        paths[name] = path
    return paths, files, folders


def _projected(path: Path, data: Mapping[str, bytes],
               items: list[dict[str, str]] | None) -> dict[Path, bytes]:
    if not items:
        return {path / key: value for key, value in data.items()}
    return {path / item["path"]: data[item["key"]] for item in items if item["key"] in data}


@dataclass(frozen=True)
class _Arch:
    node: str
    host: str
    guest: GuestLookup


def _container(container: dict[str, Any], pod: Mapping[str, Any], folder: Path,
               ports: dict[int, int], volumes: dict[str, Path], lookup: Lookup,
               host_env: Mapping[str, str], arch: _Arch) -> ContainerPlan:
    name = container["name"]
    termination = folder / "containers" / name / "termination-log"
    rewrites = _path_rewrites(container, volumes, termination)
    image = container.get("image", "")
    kind = image_kind(image)
    guest = arch.guest(arch.node) if needs_guest(image, arch.node, arch.host) else None
    entry, argv = _argv(container, kind, ports, guest, arch.node)
    env = {key: host_env[key] for key in PASSED_HOST_ENV if key in host_env}
    if ports:
        env["PORT"] = str(next(iter(ports.values())))
    env.update(_env(container, pod, lookup))
    env = {key: _rewrite(value, rewrites) for key, value in env.items()}
    if guest is not None:
        # what the emulated Python needs wins over the container's own variables, and its
        # paths are the agent's (like its interpreter's: never rewritten)
        env.update(guest.env)
    return ContainerPlan(
        name=name,
        # the agent's own interpreter path is never a container path (it may live under
        # a mounted path such as /tmp when the checkout does)
        argv=(*entry, *(_rewrite(arg, rewrites) for arg in argv)),
        env=env,
        cwd=folder / "containers" / name / "work",
        termination_path=termination,
        readiness=_probe(container.get("readinessProbe"), container, ports),
        emulator=guest.emulator if guest is not None else "")


def _argv(container: dict[str, Any], kind: str, ports: dict[int, int], guest: Guest | None,
          node_arch: str) -> tuple[list[str], list[str]]:
    """(the agent's entry point, the container's own arguments to rewrite)."""
    command = list(container.get("command") or [])
    args = [str(arg) for arg in container.get("args") or []]
    if kind == "host":
        if not command and not args:
            raise PodSpecError("CreateContainerConfigError",
                               f"container {container['name']}: host images need a command")
        return [], command + args
    python = list(guest.python) if guest is not None else [sys.executable]
    if not command or command[0] == "neofleet":
        return ([*python, "-m", "neofleet.cli"],
                _rewrite_ports(command[1:], ports) + _rewrite_ports(args, ports))
    if command[0] in ("python", "python3"):
        return python, _rewrite_ports(command[1:], ports) + _rewrite_ports(args, ports)
    if guest is not None:
        raise PodSpecError("CreateContainerConfigError",
                           f"container {container['name']}: on this {node_arch} node "
                           f"{_image_name(container.get('image', ''))} runs only neofleet "
                           f"or python (under {guest.emulator}); {command[0]!r} would run "
                           "on this machine's CPU")
    return [], _rewrite_ports(command, ports) + _rewrite_ports(args, ports)


def _rewrite_ports(args: list[str], ports: dict[int, int]) -> list[str]:
    out = list(args)
    for index, arg in enumerate(out):
        if arg == "--port" and index + 1 < len(out) and out[index + 1].isdigit():
            out[index + 1] = str(ports.get(int(out[index + 1]), out[index + 1]))
        elif arg.startswith("--port=") and arg[7:].isdigit():
            out[index] = f"--port={ports.get(int(arg[7:]), arg[7:])}"
    return out


def _path_rewrites(container: dict[str, Any], volumes: dict[str, Path],
                   termination: Path) -> list[tuple[str, str]]:
    pairs = [(container.get("terminationMessagePath", DEFAULT_TERMINATION_PATH),
              str(termination))]
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volumes:
            raise PodSpecError("CreateContainerConfigError",
                               f"volume mount {mount['name']} names no volume of the pod")
        host = volumes[mount["name"]] / mount.get("subPath", "")
        pairs.append((mount["mountPath"].rstrip("/") or "/", str(host).rstrip("/")))
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def _rewrite(text: str, rewrites: list[tuple[str, str]]) -> str:
    """Container paths to host paths in one pass (longest container path first), so a
    host path is never rewritten again by a mount whose path it happens to start with
    (the pod folders live under /tmp, and pods mount /tmp)."""
    if not rewrites:
        return text
    hosts = dict(rewrites)
    alternatives = "|".join(re.escape(path) for path, _ in rewrites)
    pattern = rf"(?<![\w./-])({alternatives})(?=/|$|[\s\"';:,)=])"
    return re.sub(pattern, lambda match: hosts[match.group(1)], text)


def _env(container: dict[str, Any], pod: Mapping[str, Any], lookup: Lookup) -> dict[str, str]:
    env: dict[str, str] = {}
    namespace = pod["metadata"]["namespace"]
    for source in container.get("envFrom", []):
        kind, ref = _ref_of(source, "configMapRef", "secretRef")
        data = lookup(kind, namespace, ref["name"])
        if data is None and not ref.get("optional", False):
            raise PodSpecError("CreateContainerConfigError", f"{kind} {namespace}/"
                               f"{ref['name']} not found")
        prefix = source.get("prefix", "")
        env.update({prefix + k: v.decode() for k, v in (data or {}).items()})
    for item in container.get("env", []):
        env[item["name"]] = _env_value(item, pod, lookup, env)
    return env


def _ref_of(source: dict[str, Any], configmap_key: str, secret_key: str
            ) -> tuple[str, dict[str, Any]]:
    if configmap_key in source:
        return "configmap", source[configmap_key]
    return "secret", source[secret_key]


def _env_value(item: dict[str, Any], pod: Mapping[str, Any], lookup: Lookup,
               earlier: dict[str, str]) -> str:
    if "valueFrom" not in item:
        value = str(item.get("value", ""))
        return re.sub(r"\$\((\w+)\)", lambda m: earlier.get(m.group(1), m.group(0)), value)
    source = item["valueFrom"]
    if "fieldRef" in source:
        return _field(pod, source["fieldRef"]["fieldPath"])
    if "configMapKeyRef" in source or "secretKeyRef" in source:
        kind, ref = _ref_of(source, "configMapKeyRef", "secretKeyRef")
        data = lookup(kind, pod["metadata"]["namespace"], ref["name"]) or {}
        if ref["key"] not in data:
            if ref.get("optional", False):
                return ""
            raise PodSpecError("CreateContainerConfigError",
                               f"env {item['name']}: key {ref['key']} not in {kind} "
                               f"{ref['name']}")
        return data[ref["key"]].decode()
    raise PodSpecError("CreateContainerConfigError",
                       f"env {item['name']}: {sorted(source)} is not simulated")


def _field(pod: Mapping[str, Any], path: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    simple = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
              "metadata.uid": meta["uid"], "spec.nodeName": spec.get("nodeName", ""),
              "spec.serviceAccountName": spec.get("serviceAccountName", ""),
              "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    raise PodSpecError("CreateContainerConfigError", f"fieldRef {path} is not simulated")


def _probe(probe: dict[str, Any] | None, container: dict[str, Any],
           ports: dict[int, int]) -> Probe | None:
    if not probe:
        return None
    timing = Probe(kind="exec", initial_delay_s=float(probe.get("initialDelaySeconds", 0)),
                   period_s=float(probe.get("periodSeconds", 10)),
                   timeout_s=float(probe.get("timeoutSeconds", 1)),
                   failure_threshold=int(probe.get("failureThreshold", 3)))
    if "exec" in probe:
        return replace(timing, command=tuple(probe["exec"]["command"]))
    action = probe.get("httpGet") or probe.get("tcpSocket")
    if action is None:
        raise PodSpecError("CreateContainerConfigError", f"probe {sorted(probe)} not simulated")
    port = _port_number(action["port"], container)
    if port not in ports:
        raise PodSpecError("CreateContainerConfigError",
                           f"probe port {action['port']} is not a declared containerPort")
    kind = "http" if "httpGet" in probe else "tcp"
    return replace(timing, kind=kind, port=ports[port], path=action.get("path", "/"))


def _port_number(port: int | str, container: dict[str, Any]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise PodSpecError("CreateContainerConfigError", f"no container port named {port!r}")


def decode_secret(data: Mapping[str, str] | None) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (data or {}).items()}


def encode_configmap(data: Mapping[str, str] | None,
                     binary: Mapping[str, str] | None) -> dict[str, bytes]:
    out = {key: value.encode() for key, value in (data or {}).items()}
    out.update(decode_secret(binary))
    return out
