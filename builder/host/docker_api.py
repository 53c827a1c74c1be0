"""The only module that talks to a Docker engine (through the Docker SDK).

Thin and typed: build an image from an in-memory context, run a command in a
throwaway container with a work directory copied in and out (no bind mounts,
so a remote engine over ssh:// or tcp:// works the same), and read values from
inside an image. Every engine failure becomes an EngineError / BuildError with
a one-line message and a hint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.context import ContextAPI
from docker.transport import sshconn
from docker.utils import parse_repository_tag

from builder.errors import BuildError, EngineError, EngineUnreachable, StepError
from builder.host.docker_tar import context_tar, dir_tar, numeric_owner, take_path, take_work_dir

log = logging.getLogger(__name__)

LogFn = Callable[[str], None]
T = TypeVar("T")
_CONNECTION_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException,
                      urllib3.exceptions.HTTPError, OSError)
TAIL_LINES = 30
MANAGED_LABEL = "io.edge-builder.managed"  # set on every container this module creates
_CALL_TIMEOUT = 300.0  # per-request timeout after connecting (log streams have none)
# Docker keeps stdout and stderr apart and does not keep their relative order, so
# an error on stderr could land before the last stdout lines and fall out of the
# log tail. One pipe for both keeps the order; "$@" passes the argv untouched.
_MERGED_OUTPUT = ["/bin/sh", "-c", 'exec "$@" 2>&1', "sh"]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}  # `uname -m` names -> Docker's
_BINFMT_ARM64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
_UNREACHABLE_HINT = "start Docker, or set DOCKER_HOST / `docker context use`, or use --runner local"
_BINFMT_HINT = (
    "on the engine host: `apt-get install qemu-user-static binfmt-support`, or "
    "`docker run --privileged --rm tonistiigi/binfmt --install arm64`"
)


def _quiet_close(close: Callable[[Any], None]) -> Callable[[Any], None]:
    """docker-py's ssh socket closes by writing to its ssh process: once a device (and so that
    process) is gone, the write fails in a finalizer at exit and prints a traceback for nothing."""

    def close_quietly(sock: Any) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            close(sock)

    return close_quietly


sshconn.SSHSocket.close = _quiet_close(sshconn.SSHSocket.close)

_RUNNING: dict[str, Engine] = {}  # every container this process has started and not yet removed
_RUNNING_LOCK = threading.Lock()
_CANCELLED = threading.Event()


def remove_all_containers() -> None:
    """Kill and remove every container this process started, on every engine, and start no more
    (Ctrl-C in a matrix: the main thread calls this, and the threads waiting on them end)."""
    _CANCELLED.set()
    with _RUNNING_LOCK:
        running = list(_RUNNING.items())
    for cid, engine in running:
        engine._remove(cid)


class Attempt:
    """One try at running work on an engine, and its fencing token: once the attempt is given up
    (`revoke`), it starts no container and nothing it copies out lands in the run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.revoked = False
        self.containers: list[str] = []
        self.finished = threading.Event()  # its worker has returned (watched)

    @contextlib.contextmanager
    def landing(self) -> Iterator[None]:
        """Held while the attempt's files are moved into the run; refused once it is revoked."""
        with self._lock:
            if self.revoked:
                raise EngineUnreachable("a given-up attempt tried to write into the run: dropped")
            yield

    def revoke(self) -> None:
        with self._lock:  # waits for a landing in progress: after this, none starts
            self.revoked = True


@dataclass(frozen=True)
class RunResult:
    """What a container run ended with: its exit code and its last log lines."""

    exit_code: int
    log_tail: list[str] = field(default_factory=list)


class Engine:
    """A connected Docker engine: `url`, `version` and native `arch` (e.g. "amd64")."""

    def __init__(self, client: docker.DockerClient, url: str, tls: docker.tls.TLSConfig | bool = False):
        self._client = client
        self._api = client.api
        self.url = url
        self._tls = tls
        with self._errors("reading the engine version"):
            info = self._api.version()
            self._info = self._api.info()
        self.version: str = info.get("Version", "?")
        self.arch: str = info.get("Arch", "?")

    @classmethod
    def connect(cls, address: str | None = None, *, tls: docker.tls.TLSConfig | None = None,
                tls_files: tuple[Path, Path, Path] | None = None, timeout: float = 5.0) -> Engine:
        """Connect to `address` (an engine URL or a Docker context name), else $DOCKER_HOST, else the
        current context; raise EngineUnreachable if it does not answer. `tls_files` (CA, client
        certificate, client key) verify a tcp:// engine as `docker --tlsverify` does."""
        if tls_files:
            ca_cert, client_cert, client_key = map(str, tls_files)
            tls = docker.tls.TLSConfig(client_cert=(client_cert, client_key), ca_cert=ca_cert, verify=True)
        url, context_tls = _engine_address(address)
        tls = tls or context_tls
        outcome: dict = {}

        def connect() -> None:  # over ssh docker-py applies no timeout: a frozen engine would block forever
            try:
                client = docker.DockerClient(
                    base_url=url, tls=tls, timeout=timeout, use_ssh_client=url.startswith("ssh://")
                )
                client.ping()
                outcome["engine"] = cls(client, url, tls)
            except BaseException as exc:  # handed over to the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=connect, name=f"connect {display_url(url)}", daemon=True)
        worker.start()
        worker.join(3 * timeout)  # a ping, the version and the info
        if worker.is_alive():
            raise EngineUnreachable(f"Docker engine at {display_url(url)} did not answer within {3 * timeout:g} s",
                                    hint=_UNREACHABLE_HINT)
        error = outcome.get("error")
        if isinstance(error, EngineError):
            raise error
        if isinstance(error, _CONNECTION_ERRORS):
            raise EngineUnreachable(
                f"Docker engine not reachable at {display_url(url)}: {_short_reason(error)}", hint=_UNREACHABLE_HINT
            ) from error
        if error is not None:
            raise error
        engine = outcome["engine"]
        engine._api.timeout = _CALL_TIMEOUT
        return engine

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, "engine 20.10 at unix://...") or (False, why not); never raises."""
        try:
            engine = cls.connect()
        except EngineError as exc:
            return False, exc.message
        return True, f"engine {engine.version} ({engine.arch}) at {display_url(engine.url)}"

    def answers(self, seconds: float) -> bool:
        """Whether the engine answers a ping on a new connection within `seconds`.

        A new connection, in a thread with a deadline: over ssh, docker-py applies no
        timeout, and a request to a hung engine (a frozen device) blocks forever.
        """
        answered = threading.Event()

        def ping() -> None:
            try:
                Engine.connect(self.url, tls=self._tls or None, timeout=seconds)
                answered.set()
            except EngineError:
                pass

        threading.Thread(target=ping, name=f"ping {display_url(self.url)}", daemon=True).start()
        return answered.wait(seconds)

    def watched(self, call: Callable[[Attempt], T], *, every: float = 20.0, misses: int = 2,
                attempt: Attempt | None = None) -> T:
        """`call(attempt)` (requests to this engine, with `attempt` given to its runs) while the engine
        is pinged on the side.

        When `misses` pings in a row go unanswered, EngineUnreachable is raised instead of
        waiting forever on a hung engine, and the attempt is given up: revoked (nothing it
        copies out later lands, no new container starts) and its containers removed in the
        background (at once, or when the engine answers again). Its thread may stay blocked
        on the dead connection until then.
        """
        attempt = attempt or Attempt()
        outcome: dict = {}

        def work() -> None:
            try:
                outcome["value"] = call(attempt)
            except BaseException as exc:  # handed over to the caller's thread as it is
                outcome["error"] = exc
            finally:
                attempt.finished.set()

        worker = threading.Thread(target=work, name=f"on {display_url(self.url)}", daemon=True)
        worker.start()
        missed = 0
        while True:
            worker.join(every)
            if not worker.is_alive():
                break
            missed = 0 if self.answers(every) else missed + 1
            if missed >= misses:
                self.give_up(attempt)
                raise EngineUnreachable(f"the engine at {display_url(self.url)} stopped answering "
                                        f"({misses} pings of {every:g} s missed)", hint=_UNREACHABLE_HINT)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def machine(self) -> dict:
        """Which machine the engine runs on, as known when it was connected: the engine's own id, host name,
        cores, memory and kernel, and the CPU model where the engine is on this machine (a unix socket)."""
        from builder.stage.device_facts import machine_identity

        info = self._info
        known = {"engine_id": info.get("ID"), "host": info.get("Name"), "cores": info.get("NCPU"),
                 "memory": info.get("MemTotal"), "kernel": info.get("KernelVersion")}
        return known | ({"cpu_model": machine_identity()["cpu_model"]} if self.url.startswith("unix://") else {})

    def give_up(self, attempt: Attempt) -> None:
        """Revoke `attempt` and remove its containers, in the background (the engine may not answer)."""
        attempt.revoke()
        for cid in list(attempt.containers):
            threading.Thread(target=self._remove, args=(cid,), name=f"remove {cid[:12]}", daemon=True).start()

    def remove_container(self, cid: str) -> None:
        """Kill and remove a container this process started (a given-up attempt's, once its engine is back)."""
        self._remove(cid)

    def copy_paths(self, cid: str, container_dir: str, rels: list[str], dest: Path) -> None:
        """Copy files or folders `rels` (relative to `container_dir`) out of a container, running or not,
        into the same places under `dest`."""
        for rel in rels:
            with self._errors(f"copying {rel} out of container {cid[:12]}"):
                chunks, _ = self._api.get_archive(cid, f"{container_dir}/{rel}")
                take_path(chunks, dest / rel)

    @property
    def platform(self) -> str:
        """The engine's native platform, e.g. "linux/amd64": where images build and run without emulation."""
        return f"linux/{_ARCHES.get(self.arch, self.arch)}"

    def image_id(self, tag: str) -> str | None:
        """The id of the image `tag`, or None if the engine does not have it."""
        with self._errors(f"inspecting image {tag}"):
            try:
                return self._api.inspect_image(tag)["Id"]
            except docker.errors.ImageNotFound:
                return None

    def repo_digest(self, tag: str) -> str | None:
        """The registry digest of `tag` once pushed or pulled (None for a local-only image)."""
        with self._errors(f"inspecting image {tag}"):
            try:
                digests = self._api.inspect_image(tag).get("RepoDigests") or []
            except docker.errors.ImageNotFound:
                return None
        return digests[0] if digests else None

    def has_runtime(self, name: str) -> bool:
        """Whether the engine offers an OCI runtime by this name (`docker info`'s Runtimes)."""
        with self._errors("reading the engine info"):
            return name in (self._api.info().get("Runtimes") or {})

    def facts(self) -> dict:
        """What the engine says of its machine: OS, kernel, arch, cores, memory, runtimes, storage."""
        with self._errors("reading the engine info"):
            info = self._api.info()
        return {
            "engine": display_url(self.url), "hostname": info.get("Name"), "version": self.version,
            "platform": self.platform, "os": info.get("OperatingSystem"), "kernel": info.get("KernelVersion"),
            "cores": info.get("NCPU"), "memory_mb": round((info.get("MemTotal") or 0) / 2**20),
            "runtimes": sorted(info.get("Runtimes") or {}), "default_runtime": info.get("DefaultRuntime"),
            "docker_root": info.get("DockerRootDir"),
        }

    def remove_image(self, tag: str) -> None:
        with self._errors(f"removing image {tag}"):
            self._api.remove_image(tag, force=True)

    def tag(self, image: str, ref: str) -> None:
        repository, version = parse_repository_tag(ref)
        with self._errors(f"tagging {image} as {ref}"):
            self._api.tag(image, repository, version or "latest")

    def push(self, ref: str, on_log: LogFn | None = None) -> None:
        """Push `ref` (REGISTRY/REPO:TAG) to its registry; raise EngineError with the registry's reason."""
        repository, version = parse_repository_tag(ref)
        with self._errors(f"pushing {ref}"):
            for chunk in self._api.push(repository, tag=version, stream=True, decode=True):
                if "error" in chunk:
                    raise EngineError(f"pushing {ref} failed: {chunk['error'].strip()}",
                                      hint="check that the registry answers and accepts pushes from this engine")
                if on_log and chunk.get("status") in ("Pushed", "Layer already exists"):
                    on_log(f"{chunk.get('id', '')}: {chunk['status']}")

    def pull(self, ref: str, platform: str | None = None) -> bool:
        """Pull `ref`; False when the registry does not have it (or cannot be reached)."""
        repository, version = parse_repository_tag(ref)
        try:
            with self._errors(f"pulling {ref}"):
                for chunk in self._api.pull(repository, tag=version, platform=platform, stream=True, decode=True):
                    if "error" in chunk:
                        log.info("pull of %s failed: %s", ref, chunk["error"])
                        return False
        except EngineUnreachable:
            raise
        except EngineError as exc:  # not found, or the registry refused: the caller builds instead
            log.info("pull of %s failed: %s", ref, exc.message)
            return False
        return self.image_id(ref) is not None

    def build(
        self,
        *,
        context: dict[str, bytes | Path],
        tag: str,
        buildargs: dict[str, str] | None = None,
        platform: str | None = None,
        labels: dict[str, str] | None = None,
        on_log: LogFn | None = None,
    ) -> str:
        """Build `context` (archive path -> bytes, with a "Dockerfile"), tag it, return the image id.

        Classic builder (no BuildKit), so `RUN --mount=type=secret` does not exist.
        `buildargs` may hold proxy URLs with credentials: they are never logged.
        The classic builder passes the predefined proxy args (HTTP_PROXY,
        HTTPS_PROXY, NO_PROXY, FTP_PROXY, ALL_PROXY and lower case) to RUN and
        keeps their values out of the image history and the cache key, but only
        while the Dockerfile does not declare them with ARG (measured on 20.10:
        a declared `ARG HTTP_PROXY` puts its value into the history of every
        later RUN, as it does for any other arg). Templates must not declare them.
        The image is tagged only after the build succeeded.
        """
        log.debug("building %s (platform %s, build args %s)", tag, platform, sorted(buildargs or {}))
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        image_id = None
        with self._errors(f"building {tag}"):
            try:
                stream = self._api.build(
                    fileobj=context_tar(context), custom_context=True, decode=True, rm=True,
                    forcerm=True, pull=False, buildargs=buildargs, platform=platform, labels=labels,
                )  # fmt: skip
                for chunk in stream:
                    if "error" in chunk or "errorDetail" in chunk:
                        detail = chunk.get("errorDetail") or {}
                        message = (chunk.get("error") or detail.get("message") or "").strip() or "unknown error"
                        raise _build_error(tag, message, list(tail))
                    for line in _lines(chunk.get("stream", "")):
                        tail.append(line)
                        if on_log:
                            on_log(line)
                    image_id = (chunk.get("aux") or {}).get("ID", image_id)
            except docker.errors.APIError as exc:  # e.g. a Dockerfile that does not parse
                raise _build_error(tag, _short_reason(exc), list(tail)) from exc
            if not image_id:
                raise _build_error(tag, "the engine reported no image id", list(tail))
            repository, version = parse_repository_tag(tag)
            self._api.tag(image_id, repository, version or "latest")
        return image_id

    def run(
        self,
        *,
        image: str,
        command: list[str],
        workdir_in: Path | None = None,
        container_dir: str = "/work",
        copy_out: bool = True,
        env: dict[str, str] | None = None,
        user: str | None = None,
        platform: str | None = None,
        network: str | None = None,
        runtime: str | None = None,
        group_add: list[str] | None = None,
        labels: dict[str, str] | None = None,
        on_log: LogFn | None = None,
        attempt: Attempt | None = None,
    ) -> RunResult:
        """Run `command` in a new container of `image`, with `workdir_in` copied to `container_dir`.

        When `copy_out` is set, the container's `container_dir` is copied back into
        `workdir_in` after the run (files are written by this process, so they
        belong to the invoking user; files deleted in the container stay on the
        host). The container is always removed. Output (stderr merged into
        stdout, in order; the image needs /bin/sh) goes line by line to `on_log`,
        with PYTHONUNBUFFERED=1 unless `env` sets it. A non-zero exit is
        returned, not raised: the caller decides, with the log tail in hand.
        """
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        environment = {"PYTHONUNBUFFERED": "1", **(env or {})}
        with self._container(
            image, [*_MERGED_OUTPUT, *command], working_dir=container_dir, environment=environment,
            user=user, platform=platform,
            host_config=self._api.create_host_config(network_mode=network, runtime=runtime, group_add=group_add),
            labels=labels, attempt=attempt,
        ) as cid:  # fmt: skip
            with self._errors(f"running {command[0]} in {image}"):
                if workdir_in is not None:
                    with dir_tar(workdir_in, container_dir, numeric_owner(user)) as data:
                        self._api.put_archive(cid, "/", data)
                self._api.start(cid)
                for line in _lines_of(self._api.logs(cid, stream=True, follow=True)):
                    tail.append(line)
                    if on_log:
                        on_log(line)
                exit_code = int(self._api.wait(cid)["StatusCode"])
                if copy_out and workdir_in is not None:
                    chunks, _ = self._api.get_archive(cid, container_dir)
                    take_work_dir(chunks, Path(workdir_in), attempt.landing if attempt else None)
        return RunResult(exit_code, list(tail))

    def exec_python(self, image: str, code: str, platform: str | None = None) -> str:
        """Run `python3 -c code` in a throwaway container of `image` and return its stdout."""
        with self._container(image, ["python3", "-c", code], platform=platform) as cid:
            with self._errors(f"running python3 in {image}"):
                self._api.start(cid)
                exit_code = int(self._api.wait(cid)["StatusCode"])
                out = self._api.logs(cid, stdout=True, stderr=False).decode(errors="replace")
                if exit_code != 0:
                    err = self._api.logs(cid, stdout=False, stderr=True).decode(errors="replace")
                    lines = err.strip().splitlines() or ["(no output)"]
                    raise StepError(
                        f"python3 in {image} exited with {exit_code}: {lines[-1]}",
                        hint="the image may lack the package the code imports; rebuild it",
                        log_tail=lines[-TAIL_LINES:],
                    )
        return out

    def binfmt_arm64(self) -> tuple[bool, str]:
        """Can this engine run linux/arm64 containers? (yes/no, with how to fix a no)."""
        if self.arch == "arm64":
            return True, f"engine at {self.url} is arm64"
        if not self.url.startswith("unix://"):  # the image's smoke test tells, with _build_error's hint
            return True, f"engine at {display_url(self.url)} is {self.arch}: arm64 runs there under QEMU, if set up"
        try:
            state = _BINFMT_ARM64.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            state = "missing"
        if state == "enabled":
            return True, "arm64 runs under QEMU emulation (binfmt qemu-aarch64 enabled)"
        return False, f"binfmt handler qemu-aarch64 is {state} on this {self.arch} host; {_BINFMT_HINT}"

    @contextlib.contextmanager
    def _container(
        self, image: str, command: list[str], labels: dict[str, str] | None = None,
        attempt: Attempt | None = None, **kwargs: Any
    ) -> Iterator[str]:
        """Create a labelled container and remove it afterwards, whatever happens (Ctrl-C too)."""
        labels = {MANAGED_LABEL: "1", **(labels or {})}
        with _RUNNING_LOCK:  # creation under the lock: remove_all_containers sees every container
            if _CANCELLED.is_set():
                raise EngineError("interrupted: no new containers are started")
            if attempt and attempt.revoked:
                raise EngineUnreachable("this attempt was given up: no new containers are started")
            with self._errors(f"creating a container from {image}"):
                cid = self._api.create_container(image, command, labels=labels, **kwargs)["Id"]
            _RUNNING[cid] = self
            if attempt:
                attempt.containers.append(cid)
        try:
            if attempt and attempt.revoked:  # given up while it was being created
                raise EngineUnreachable("this attempt was given up: its container is removed")
            yield cid
        finally:
            self._remove(cid)

    def _remove(self, cid: str) -> None:
        with _RUNNING_LOCK:
            _RUNNING.pop(cid, None)
        try:  # force: kill if still running (an interrupted run), then remove
            self._api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass  # removed already (by remove_all_containers)
        except _CONNECTION_ERRORS as exc:
            log.warning("could not remove container %s: %s", cid[:12], _short_reason(exc))

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn SDK and connection errors into EngineError naming what was being done."""
        try:
            yield
        except docker.errors.ImageNotFound as exc:
            raise EngineError(
                f"{doing}: image not found on the engine at {self.url}",
                hint="build the image first (builder build), or check the target's image name",
            ) from exc
        except docker.errors.APIError as exc:
            raise EngineError(f"{doing}: the engine refused: {_short_reason(exc)}") from exc
        except requests.exceptions.Timeout as exc:
            raise EngineUnreachable(f"{doing}: the engine at {display_url(self.url)} did not answer in time") from exc
        except _CONNECTION_ERRORS as exc:  # refused, reset, closed mid-stream (an ssh engine's dockerd died)
            raise EngineUnreachable(
                f"{doing}: Docker engine not reachable at {display_url(self.url)}: {_short_reason(exc)}",
                hint=_UNREACHABLE_HINT,
            ) from exc


def _build_error(tag: str, message: str, tail: list[str]) -> BuildError:
    if "exec format error" in message or any("exec format error" in line for line in tail):
        hint = f"the engine cannot run this image's platform: {_BINFMT_HINT}"
    elif tail and " : FROM " in tail[-1]:
        hint = (
            "the FROM image must already be on the engine (nothing is pulled): make the base images "
            "with .ci/base-images.sh, or point the target at a locally provided base image"
        )
    else:
        hint = "the log tail shows the failing step; fix the Dockerfile or the command it runs"
    return BuildError(f"building {tag} failed: {message.splitlines()[-1]}", hint=hint, log_tail=tail)


def _engine_address(address: str | None = None) -> tuple[str, docker.tls.TLSConfig | bool]:
    """An engine URL as given; else a context's endpoint by name; else $DOCKER_HOST (TLS from
    DOCKER_TLS_VERIFY/DOCKER_CERT_PATH); else the current context's endpoint."""
    if address and "://" in address:
        return address, False
    if not address and os.environ.get("DOCKER_HOST"):
        kwargs = docker.utils.kwargs_from_env()
        return kwargs["base_url"], kwargs.get("tls", False)
    try:
        ctx = ContextAPI.get_context(address or os.environ.get("DOCKER_CONTEXT"))
    except docker.errors.DockerException as exc:
        raise EngineError(f"cannot read the Docker context {address or '(current)'}: {exc}",
                          hint=_UNREACHABLE_HINT) from exc
    if ctx is None and address:
        raise EngineError(f"no Docker context named {address!r}",
                          hint="give an engine URL (ssh://user@host, tcp://host:2376) or see `docker context ls`")
    if ctx is None or not ctx.Host:
        return ContextAPI.DEFAULT_CONTEXT.Host, False
    return ctx.Host, ctx.TLSConfig or False


def display_url(url: str) -> str:
    """An engine URL without a password (ssh://user:secret@host -> ssh://user@host)."""
    return re.sub(r"^([a-z]+://[^:/@]+):[^@/]*@", r"\1@", url)


def _short_reason(exc: BaseException) -> str:
    """The useful part of an SDK/urllib3 error message, on one line."""
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation).strip().splitlines()[-1]
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text) or re.search(r"Error\(-?\d+, '([^']+)'\)", text)
    if match:
        return match.group(1).strip()
    return (text.strip().splitlines() or [type(exc).__name__])[0][:200]


def _lines(text: str) -> list[str]:
    """Non-empty lines of a build stream chunk, without the colour codes the engine wraps stderr in."""
    text = _ANSI.sub("", text)
    return [line for line in text.rstrip("\n").split("\n") if line.strip()] if text else []


def _lines_of(chunks: Iterable[bytes]) -> Iterator[str]:
    """Whole text lines from a stream of byte chunks that split lines anywhere."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            yield raw.decode(errors="replace").rstrip("\r")
    if pending:
        yield pending.decode(errors="replace").rstrip("\r")
