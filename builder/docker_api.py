"""The only module that talks to a Docker engine (through the Docker SDK).

Thin and typed: build an image from an in-memory context, run a command in a
throwaway container with a work directory copied in and out (no bind mounts,
so a remote engine over ssh:// or tcp:// works the same), and read values from
inside an image. Every engine failure becomes an EngineError / BuildError with
a one-line message and a hint.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import docker
import docker.errors
import requests.exceptions
from docker.context import ContextAPI
from docker.utils import parse_repository_tag

from builder.errors import BuildError, EngineError, StepError

log = logging.getLogger(__name__)

LogFn = Callable[[str], None]
TAIL_LINES = 30
MANAGED_LABEL = "io.edge-builder.managed"  # set on every container this module creates
_CONTEXT_MTIME = 0  # fixed mtime in build contexts: same bytes in, same cache key out
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


@dataclass(frozen=True)
class RunResult:
    """What a container run ended with: its exit code and its last log lines."""

    exit_code: int
    log_tail: list[str] = field(default_factory=list)


class Engine:
    """A connected Docker engine: `url`, `version` and native `arch` (e.g. "amd64")."""

    def __init__(self, client: docker.DockerClient, url: str):
        self._client = client
        self._api = client.api
        self.url = url
        with self._errors("reading the engine version"):
            info = self._api.version()
        self.version: str = info.get("Version", "?")
        self.arch: str = info.get("Arch", "?")

    @classmethod
    def connect(cls, timeout: float = 5.0) -> Engine:
        """Connect to $DOCKER_HOST, else the current Docker context; raise EngineError if it does not answer."""
        url, tls = _engine_address()
        try:
            client = docker.DockerClient(
                base_url=url, tls=tls, timeout=timeout, use_ssh_client=url.startswith("ssh://")
            )
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(
                f"Docker engine not reachable at {url}: {_short_reason(exc)}", hint=_UNREACHABLE_HINT
            ) from exc
        client.api.timeout = _CALL_TIMEOUT
        return cls(client, url)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, "engine 20.10 at unix://...") or (False, why not); never raises."""
        try:
            engine = cls.connect()
        except EngineError as exc:
            return False, exc.message
        return True, f"engine {engine.version} ({engine.arch}) at {engine.url}"

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
        """Whether the engine offers an OCI runtime, e.g. "nvidia" (NVIDIA container toolkit)."""
        with self._errors("reading the engine info"):
            return name in (self._api.info().get("Runtimes") or {})

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
                    fileobj=_context_tar(context), custom_context=True, decode=True, rm=True,
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
        labels: dict[str, str] | None = None,
        on_log: LogFn | None = None,
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
            host_config=self._api.create_host_config(network_mode=network), labels=labels,
        ) as cid:  # fmt: skip
            with self._errors(f"running {command[0]} in {image}"):
                if workdir_in is not None:
                    with _dir_tar(workdir_in, container_dir, _numeric_owner(user)) as data:
                        self._api.put_archive(cid, "/", data)
                self._api.start(cid)
                for line in _lines_of(self._api.logs(cid, stream=True, follow=True)):
                    tail.append(line)
                    if on_log:
                        on_log(line)
                exit_code = int(self._api.wait(cid)["StatusCode"])
                if copy_out and workdir_in is not None:
                    chunks, _ = self._api.get_archive(cid, container_dir)
                    _extract_dir(chunks, Path(workdir_in))
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
        if not self.url.startswith("unix://"):
            return False, (
                f"engine at {self.url} is {self.arch} and remote: arm64 emulation there cannot be "
                f"checked from here; {_BINFMT_HINT}"
            )
        try:
            state = _BINFMT_ARM64.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            state = "missing"
        if state == "enabled":
            return True, "arm64 runs under QEMU emulation (binfmt qemu-aarch64 enabled)"
        return False, f"binfmt handler qemu-aarch64 is {state} on this {self.arch} host; {_BINFMT_HINT}"

    @contextlib.contextmanager
    def _container(
        self, image: str, command: list[str], labels: dict[str, str] | None = None, **kwargs: Any
    ) -> Iterator[str]:
        """Create a labelled container and remove it afterwards, whatever happens (Ctrl-C too)."""
        labels = {MANAGED_LABEL: "1", **(labels or {})}
        with self._errors(f"creating a container from {image}"):
            cid = self._api.create_container(image, command, labels=labels, **kwargs)["Id"]
        try:
            yield cid
        finally:
            try:  # force: kill if still running (an interrupted run), then remove
                self._api.remove_container(cid, force=True)
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
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
            raise EngineError(f"{doing}: the engine at {self.url} did not answer in time") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise EngineError(
                f"{doing}: Docker engine not reachable at {self.url}: {_short_reason(exc)}",
                hint=_UNREACHABLE_HINT,
            ) from exc


def _build_error(tag: str, message: str, tail: list[str]) -> BuildError:
    if tail and " : FROM " in tail[-1]:
        hint = (
            "the FROM image must already be on the engine (nothing is pulled): make the base images "
            "with .ci/base-images.sh, or point the target at a locally provided base image"
        )
    else:
        hint = "the log tail shows the failing step; fix the Dockerfile or the command it runs"
    return BuildError(f"building {tag} failed: {message.splitlines()[-1]}", hint=hint, log_tail=tail)


def _engine_address() -> tuple[str, docker.tls.TLSConfig | bool]:
    """$DOCKER_HOST (TLS from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH), else the current context's endpoint."""
    if os.environ.get("DOCKER_HOST"):
        kwargs = docker.utils.kwargs_from_env()
        return kwargs["base_url"], kwargs.get("tls", False)
    try:
        ctx = ContextAPI.get_context(os.environ.get("DOCKER_CONTEXT"))
    except docker.errors.DockerException as exc:
        raise EngineError(f"cannot read the current Docker context: {exc}", hint=_UNREACHABLE_HINT) from exc
    if ctx is None or not ctx.Host:
        return ContextAPI.DEFAULT_CONTEXT.Host, False
    return ctx.Host, ctx.TLSConfig or False


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


def _context_tar(files: dict[str, bytes | Path]) -> IO[bytes]:
    """A deterministic tar of a build context: sorted names, fixed mtime and owner.

    Values are bytes, or paths of (large) files streamed from disk, e.g. wheels.
    """
    buf = tempfile.SpooledTemporaryFile(max_size=64 << 20)
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(str(PurePosixPath(name)))
            info.size = data.stat().st_size if isinstance(data, Path) else len(data)
            info.mtime, info.mode = _CONTEXT_MTIME, 0o644
            if isinstance(data, Path):
                with open(data, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _numeric_owner(user: str | None) -> tuple[int, int]:
    """uid/gid that copied-in files get: a numeric `user` ("1000" or "1000:1000"), else root."""
    uid, _, gid = (user or "").partition(":")
    return (int(uid) if uid.isdigit() else 0, int(gid) if gid.isdigit() else 0)


@contextlib.contextmanager
def _dir_tar(src: Path, container_dir: str, owner: tuple[int, int]) -> Iterator[Iterator[bytes]]:
    """The contents of `src` as a tar (in a temp file) whose entries live under `container_dir`."""

    def chown(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = owner
        info.uname = info.gname = ""
        return info

    with tempfile.TemporaryFile() as tmp:
        with tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(src, arcname=container_dir.strip("/") or ".", filter=chown)
        tmp.seek(0)
        yield iter(lambda: tmp.read(1 << 20), b"")


def _extract_dir(chunks: Iterable[bytes], dest: Path) -> None:
    """Extract a `get_archive` stream into `dest`, dropping its top folder.

    Written by hand rather than with tarfile.extractall: the files must belong to
    the invoking user, and nothing may land outside `dest` (no absolute paths,
    no "..", no links pointing out, no devices); Python 3.11.2 has no tar filters.
    """
    root = dest.resolve()
    with tempfile.TemporaryFile() as tmp:
        for chunk in chunks:
            tmp.write(chunk)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp, mode="r") as tar:
            for member in tar:
                target = _inside(root, member.name)
                if target is None:
                    continue
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                parent = target.parent.resolve()
                if parent != root and root not in parent.parents:
                    raise EngineError(f"refusing to copy {member.name!r} out: its folder links outside {dest}")
                if target.is_symlink() or target.is_file():
                    target.unlink()
                if member.isfile():
                    with tar.extractfile(member) as src, open(target, "wb") as out:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, out)
                elif member.islnk() and (source := _inside(root, member.linkname)) and source.is_file():
                    shutil.copyfile(source, target)
                elif member.issym() and _link_stays_inside(root, target, member.linkname):
                    os.symlink(member.linkname, target)
                    continue
                else:
                    log.debug("skipping %s from the container (type %r)", member.name, member.type)
                    continue
                os.chmod(target, (member.mode & 0o777) | 0o600)
                os.utime(target, (member.mtime, member.mtime))


def _inside(root: Path, name: str) -> Path | None:
    """`root / name` minus the archive's top folder; None for the top folder itself."""
    parts = PurePosixPath(name).parts[1:]
    if not parts or parts == (".",):
        return None
    if PurePosixPath(name).is_absolute() or ".." in parts:
        raise EngineError(f"refusing to copy {name!r} out of the container: it points outside the work dir")
    return root.joinpath(*parts)


def _link_stays_inside(root: Path, link: Path, target: str) -> bool:
    if PurePosixPath(target).is_absolute():
        return False
    resolved = Path(os.path.normpath(link.parent / target))
    return resolved == root or root in resolved.parents
