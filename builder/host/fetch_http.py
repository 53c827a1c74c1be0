"""One URL into one ``.part`` file: retries with backoff, Range resume, checked redirects.

Stdlib only, so it runs in minimal containers: proxies come from
HTTP_PROXY/HTTPS_PROXY/NO_PROXY (urllib's default ProxyHandler), TLS trust
from SSL_CERT_FILE or REQUESTS_CA_BUNDLE when set.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import ssl
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError

from builder import __version__
from builder.errors import FetchError
from builder.util import atomic_write_bytes

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]
_CHUNK = 1 << 18
_RETRY_STATUS = {408, 429}


class MirrorFailed(Exception):
    """One source failed; `kind` ("http", "network", "tls", "blocked", ...) picks the user's hint."""

    def __init__(self, reason: str, kind: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.kind, self.retry_after = reason, kind, retry_after


class Transient(MirrorFailed):
    """A failure worth retrying on the same mirror."""


class HttpDownloader:
    """Completes a ``.part`` file from a URL; the caller verifies and stores it."""

    def __init__(self, *, timeout: float, retries: int, backoff: float,
                 check_url: Callable[[str], None], progress: Progress | None = None):
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._check_url = check_url  # raises MirrorFailed for a URL that must not be fetched
        self._progress = progress
        self._opener: urllib.request.OpenerDirector | None = None

    def download(self, url: str, part: Path, max_bytes: int | None = None) -> bool:
        """Complete `part` from `url`, retrying transient failures; True if it kept earlier bytes.

        A file larger than `max_bytes` fails (kind "size") and its partial file is dropped.
        """
        attempt = 0
        while True:
            try:
                return self._get(url, part, max_bytes)
            except Transient as exc:
                if attempt >= self.retries:
                    raise MirrorFailed(f"{exc.reason} (after {attempt + 1} attempts)", exc.kind) from None
                delay = exc.retry_after if exc.retry_after is not None else self.backoff * 2**attempt
                attempt += 1
                log.info("retry %d/%d of %s in %.1fs: %s", attempt, self.retries, url, delay, exc.reason)
                time.sleep(delay)

    def _open(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        if self._opener is None:
            cafile = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
            if cafile and not Path(cafile).is_file():
                raise FetchError(f"CA bundle {cafile} (from SSL_CERT_FILE/REQUESTS_CA_BUNDLE) does not exist",
                                 hint="point SSL_CERT_FILE at an existing PEM bundle, or unset it")
            try:
                context = ssl.create_default_context(cafile=cafile or None)
            except ssl.SSLError as exc:
                raise FetchError(f"CA bundle {cafile} (from SSL_CERT_FILE/REQUESTS_CA_BUNDLE) is unusable: {exc}",
                                 hint="point SSL_CERT_FILE at a PEM file of CA certificates") from None
            self._opener = urllib.request.build_opener(  # ProxyHandler (env proxies) is added by default
                urllib.request.HTTPSHandler(context=context), _CheckedRedirects(self._check_url))
        return self._opener.open(request, timeout=self.timeout)

    def _get(self, url: str, part: Path, max_bytes: int | None) -> bool:
        """One GET, resuming `part` with Range when it exists; True if earlier bytes were kept."""
        meta = part.with_suffix(".json")
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": f"edge-builder/{__version__}"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            validator = _read_json(meta).get("validator")
            if validator:  # the server answers 200 with the whole file if it changed
                headers["If-Range"] = validator
        log.info("GET  %s%s", url, f" (resuming at {offset})" if offset else "")
        try:
            response = self._open(urllib.request.Request(url, headers=headers))
        except HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                part.unlink(missing_ok=True)
                raise Transient("416 Range Not Satisfiable (partial file dropped)", "http") from None
            if exc.code == 407:  # the proxy, not the server, refused (a plain http URL)
                raise MirrorFailed(f"proxy authentication required ({exc.code} {exc.reason})", "proxy-auth") from None
            transient = exc.code >= 500 or exc.code in _RETRY_STATUS
            raise (Transient if transient else MirrorFailed)(
                f"{exc.code} {exc.reason}", "http", _retry_after(exc.headers.get("Retry-After"))) from None
        except (URLError, OSError, http.client.HTTPException) as exc:
            raise _network_failure(exc) from None
        with response:
            resumed = bool(offset) and response.status == 206
            if resumed and _range_start(response.headers.get("Content-Range")) != offset:
                part.unlink(missing_ok=True)
                raise Transient(f"bad Content-Range {response.headers.get('Content-Range')!r}", "http")
            if offset and not resumed:
                log.info("%s ignored the Range request; downloading from the start", url)
            if not resumed:
                etag = response.headers.get("ETag") or ""
                validator = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
                atomic_write_bytes(meta, json.dumps({"url": url, "validator": validator}).encode())
            self._receive(response, url, part, offset if resumed else 0, max_bytes)
            return resumed

    def _receive(self, response: http.client.HTTPResponse, url: str, part: Path, offset: int,
                 max_bytes: int | None) -> None:
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        self._report(f"GET {url}", done, total)
        with open(part, "ab" if offset else "wb") as out:
            while (max_bytes is None or max(done, total or 0) <= max_bytes) and (chunk := _read(response)):
                out.write(chunk)
                done += len(chunk)
                self._report(f"GET {url}", done, total)
            sync(out)
        if max_bytes is not None and max(done, total or 0) > max_bytes:  # nothing worth resuming
            part.unlink()
            part.with_suffix(".json").unlink(missing_ok=True)
            raise MirrorFailed(too_large(max_bytes), "size")
        if total is not None and done < total:
            raise Transient(f"connection closed after {done} of {total} bytes", "network")

    def _report(self, message: str, done: int, total: int | None) -> None:
        if self._progress:
            self._progress(message, done, total)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Applies the allowlist to every redirect target, not only the first URL."""

    def __init__(self, check: Callable[[str], None]):
        super().__init__()
        self._check = check

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib's signature)
        self._check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def too_large(max_bytes: int) -> str:
    return f"larger than {max_bytes / (1 << 20):g} MB (the file's max_size_mb)"


def sync(out: BinaryIO) -> None:
    """Flush `out` to disk, so a rename after a crash never exposes an empty file."""
    out.flush()
    os.fsync(out.fileno())


def _read(response: http.client.HTTPResponse) -> bytes:
    try:
        return response.read(_CHUNK)
    except (OSError, http.client.HTTPException) as exc:
        raise _network_failure(exc) from None


def _network_failure(exc: BaseException) -> MirrorFailed:
    reason = exc.reason if isinstance(exc, URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):  # retrying cannot fix trust
        return MirrorFailed(f"TLS verification failed: {reason}", "tls")
    if str(reason).startswith("Tunnel connection failed: 407"):  # the proxy refused CONNECT (an https URL)
        return MirrorFailed(f"proxy authentication required ({reason})", "proxy-auth")
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return Transient("timed out", "network")
    return Transient(f"connection failed: {reason}", "network")


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _retry_after(value: str | None) -> float | None:
    return min(float(value), 60.0) if value and value.strip().isdigit() else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
