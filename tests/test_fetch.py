"""builder.host.fetch against real HTTP servers on 127.0.0.1 (and real pip, for the pip test)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.errors import ConfigError, FetchError
from builder.host import inputs
from builder.host.catalog import load_recipe
from builder.host.fetch import Fetcher, host_allowed, parse_allowlist, write_missing
from builder.stage.causes import classify

Route = Callable[[BaseHTTPRequestHandler], None]
BODY = bytes(range(256)) * 40  # 10 KiB, every offset distinguishable


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """A threaded HTTP server whose behaviour per path is a route function; it records every request."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.scheme = "https" if tls else "http"
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, dict(self.headers)))
                server.routes.get(self.path, status(404))(self)

            do_CONNECT = do_GET  # as a proxy, a CONNECT is routed by its "host:port"

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.handle_error = lambda *args: None  # a client that gave up (timeout test) is fine
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.httpd.server_address[1]}{path}"

    def hits(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def status(code: int, headers: dict[str, str] | None = None) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return route


def serve(body: bytes, *, ranges: bool = True, etag: str | None = None) -> Route:
    """200 with `body`; 206 for `Range: bytes=N-` when `ranges` (and If-Range, if sent, matches)."""
    def route(h: BaseHTTPRequestHandler) -> None:
        wanted = h.headers.get("Range", "")
        if_range = h.headers.get("If-Range")
        start = int(wanted[6:-1]) if ranges and wanted.startswith("bytes=") and wanted.endswith("-") else 0
        if if_range is not None and if_range != etag:
            start = 0
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if etag:
            h.send_header("ETag", etag)
        h.send_header("Content-Length", str(len(body) - start))
        h.end_headers()
        h.wfile.write(body[start:])
    return route


def truncated(body: bytes, after: int, etag: str | None = None) -> Route:
    """Announce all of `body`, send `after` bytes, drop the connection."""
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        if etag:
            h.send_header("ETag", etag)
        h.end_headers()
        h.wfile.write(body[:after])
        h.wfile.flush()
        h.close_connection = True
    return route


def slow(seconds: float, then: Route) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        then(h)
    return route


def sequence(*routes: Route) -> Route:
    """The n-th request gets the n-th route; the last one repeats."""
    calls = itertools.count()
    return lambda h: routes[min(next(calls), len(routes) - 1)](h)


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EDGE_BUILDER_ALLOWLIST", "DOMAIN_ALLOWLIST", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)


def fetcher(tmp_path: Path, **kwargs) -> Fetcher:
    return Fetcher(tmp_path / "cache", **{"retries": 2, "backoff": 0.01, "timeout": 5.0, **kwargs})


def stored(tmp_path: Path) -> list[Path]:
    """Every file in the trusted part of the cache (not the origin records beside them)."""
    return sorted(p for p in (tmp_path / "cache" / "sha256").glob("*/*") if p.is_file())


# --- mirrors, retries, verification -----------------------------------------


def test_mirrors_are_tried_in_order_until_one_serves_the_right_bytes(server: Server, tmp_path: Path) -> None:
    server.routes.update({"/a/model.bin": status(404), "/b/model.bin": status(500),
                          "/c/model.bin": serve(b"not the model"), "/d/model.bin": serve(BODY)})
    urls = [server.url(f"/{m}/model.bin") for m in "abcd"]

    result = fetcher(tmp_path).fetch(urls, sha256=sha(BODY))

    assert result.url == urls[3]
    assert (result.sha256, result.size, result.from_cache) == (sha(BODY), len(BODY), False)
    assert result.path == tmp_path / "cache" / "sha256" / sha(BODY) / "model.bin"
    assert result.path.read_bytes() == BODY
    hits = {m: len(server.hits(f"/{m}/model.bin")) for m in "abcd"}
    assert hits == {"a": 1, "b": 3, "c": 1, "d": 1}  # 404: no retry; 500: 1 + 2 retries
    assert stored(tmp_path) == [result.path]  # the wrong bytes never entered the store

    again = fetcher(tmp_path).fetch(urls, sha256=sha(BODY))
    assert (again.path, again.from_cache, again.url) == (result.path, True, urls[3])
    assert again.fetched_at == result.fetched_at
    assert len(server.requests) == 6  # served from the cache


def test_every_mirror_failing_names_each_reason_and_a_hint(server: Server, tmp_path: Path) -> None:
    server.routes.update({"/a/m.bin": status(404), "/b/m.bin": status(503), "/c/m.bin": serve(b"other")})
    urls = [server.url(p) for p in ("/a/m.bin", "/b/m.bin", "/c/m.bin")]

    with pytest.raises(FetchError) as info:
        fetcher(tmp_path, retries=1).fetch(urls, sha256=sha(BODY))

    message = info.value.message
    assert f"{urls[0]}: 404 Not Found" in message
    assert f"{urls[1]}: 503 Service Unavailable (after 2 attempts)" in message
    assert f"{urls[2]}: sha256 mismatch (got {sha(b'other')[:12]}.., want {sha(BODY)[:12]}..)" in message
    assert "sha256" in info.value.hint and "check the URL" in info.value.hint
    assert stored(tmp_path) == []


def test_retries_429_and_timeouts_then_succeeds(server: Server, tmp_path: Path) -> None:
    server.routes["/m.bin"] = sequence(status(429, {"Retry-After": "0"}), slow(1.0, serve(BODY)), serve(BODY))

    result = fetcher(tmp_path, timeout=0.3).fetch([server.url("/m.bin")])

    assert result.path.read_bytes() == BODY
    assert len(server.hits("/m.bin")) == 3


def test_interrupted_download_is_not_trusted_and_resumes_with_range(server: Server, tmp_path: Path) -> None:
    server.routes["/m.bin"] = sequence(truncated(BODY, 3000, etag='"v1"'), serve(BODY, etag='"v1"'))
    url = server.url("/m.bin")

    with pytest.raises(FetchError, match="after 1 attempts"):
        fetcher(tmp_path, retries=0).fetch([url], sha256=sha(BODY))
    assert stored(tmp_path) == []
    with pytest.raises(FetchError, match="offline and not in cache"):
        fetcher(tmp_path, offline=True).fetch([url])
    (part,) = (tmp_path / "cache" / "partial").glob("*.part")
    assert part.stat().st_size == 3000

    result = fetcher(tmp_path, retries=0).fetch([url], sha256=sha(BODY))  # a later run

    assert result.path.read_bytes() == BODY
    resumed = server.hits("/m.bin")[1]
    assert resumed["Range"] == "bytes=3000-" and resumed["If-Range"] == '"v1"'
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.routes["/m.bin"] = sequence(truncated(BODY, 4000), serve(BODY, ranges=False))

    result = fetcher(tmp_path).fetch([server.url("/m.bin")], sha256=sha(BODY))

    assert result.path.read_bytes() == BODY
    assert server.hits("/m.bin")[1]["Range"] == "bytes=4000-"


def test_file_changed_between_runs_is_downloaded_whole(server: Server, tmp_path: Path) -> None:
    new = bytes(reversed(BODY))
    server.routes["/m.bin"] = sequence(truncated(BODY, 5000, etag='"v1"'), serve(new, etag='"v2"'))
    url = server.url("/m.bin")
    with pytest.raises(FetchError):
        fetcher(tmp_path, retries=0).fetch([url])

    result = fetcher(tmp_path, retries=0).fetch([url])  # no sha256: only If-Range protects this

    assert result.path.read_bytes() == new


def test_corrupted_cache_entry_is_dropped_and_fetched_again(server: Server, tmp_path: Path) -> None:
    server.routes["/m.bin"] = serve(BODY)
    first = fetcher(tmp_path).fetch([server.url("/m.bin")], sha256=sha(BODY))
    first.path.write_bytes(b"bit rot")

    again = fetcher(tmp_path).fetch([server.url("/m.bin")], sha256=sha(BODY))

    assert (again.from_cache, again.path.read_bytes()) == (False, BODY)


def test_concurrent_fetches_of_one_url_download_once(server: Server, tmp_path: Path) -> None:
    server.routes["/m.bin"] = slow(0.3, serve(BODY))
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetcher(tmp_path).fetch([server.url("/m.bin")])))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [r.path.read_bytes() == BODY for r in results] == [True, True]
    assert sorted(r.from_cache for r in results) == [False, True]
    assert len(server.hits("/m.bin")) == 1


def test_progress_reports_start_and_completion(server: Server, tmp_path: Path) -> None:
    server.routes["/m.bin"] = serve(BODY)
    calls: list[tuple[str, int, int | None]] = []

    fetcher(tmp_path, progress=lambda *call: calls.append(call)).fetch([server.url("/m.bin")])

    assert calls[0] == (f"GET {server.url('/m.bin')}", 0, len(BODY))
    assert calls[-1][1:] == (len(BODY), len(BODY))


def test_local_paths_and_file_urls_are_mirrors(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(BODY)

    by_path = fetcher(tmp_path).fetch([str(tmp_path / "missing.onnx"), str(src)])
    by_url = fetcher(tmp_path, offline=True).fetch([src.as_uri()], sha256=sha(BODY))
    src.write_bytes(b"edited")
    edited = fetcher(tmp_path).fetch([str(src)])  # no sha256: local files are re-read, never stale

    assert (by_path.url, by_path.sha256) == (str(src), sha(BODY))
    assert by_url.path.read_bytes() == BODY
    assert edited.path.read_bytes() == b"edited"
    with pytest.raises(FetchError, match="cannot read .*missing.onnx"):
        fetcher(tmp_path).fetch([str(tmp_path / "missing.onnx")])


def test_bad_sha_or_filename_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="64 hex"):
        fetcher(tmp_path).fetch(["http://127.0.0.1/x"], sha256="abc")
    with pytest.raises(ConfigError, match="file name"):
        fetcher(tmp_path).fetch(["http://127.0.0.1/x"], filename="../x")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert fetcher(tmp_path).fetch([str(empty)], sha256="SHA256:" + sha(b"").upper()).sha256 == sha(b"")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a certificate")
def test_https_trusts_the_ca_bundle_from_ssl_cert_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def self_signed(name: str) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        return cert, key

    cert, key = self_signed("server")
    other_ca, _ = self_signed("other")
    srv = Server(tls=(cert, key))
    srv.routes["/m.bin"] = serve(BODY)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))  # a bundle without the server's CA
        with pytest.raises(FetchError) as info:
            fetcher(tmp_path).fetch([srv.url("/m.bin")])
        assert "TLS verification failed" in info.value.message and "SSL_CERT_FILE" in info.value.hint
        assert "attempts" not in info.value.message  # not retried: a retry cannot fix trust

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert fetcher(tmp_path).fetch([srv.url("/m.bin")]).path.read_bytes() == BODY

        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "nope.pem"))
        with pytest.raises(FetchError, match="CA bundle .*nope.pem .* does not exist"):
            fetcher(tmp_path).fetch([srv.url("/m.bin")], filename="other.bin", sha256=sha(b"x"))
        monkeypatch.setenv("SSL_CERT_FILE", str(key))  # not certificates at all
        with pytest.raises(FetchError, match="CA bundle .*server.key .* is unusable"):
            fetcher(tmp_path).fetch([srv.url("/m.bin")], filename="other.bin", sha256=sha(b"x"))
    finally:
        srv.stop()


# --- allowlist ----------------------------------------------------------------


def test_allowlist_matches_hosts_and_subdomains_only() -> None:
    allow = parse_allowlist(" GitHub.com, *.googleapis.com,,.huggingface.co ")
    assert allow == ["github.com", "googleapis.com", "huggingface.co"]
    assert host_allowed("github.com", allow) and host_allowed("raw.github.com", allow)
    assert host_allowed("storage.googleapis.com", allow) and host_allowed("HuggingFace.co", allow)
    assert not host_allowed("evil-github.com", allow)
    assert not host_allowed("github.com.evil.net", allow)
    assert host_allowed("anything.example", [])


def test_blocked_host_is_never_contacted(server: Server, tmp_path: Path) -> None:
    server.routes["/m.bin"] = serve(BODY)

    with pytest.raises(FetchError) as info:
        fetcher(tmp_path, allowlist=["example.com"]).fetch([server.url("/m.bin")])

    assert "blocked by allowlist: host 127.0.0.1 not in the recipe's allowlist example.com" in info.value.message
    assert "recipe's allowlist" in info.value.hint
    assert server.requests == []


def test_a_recipe_allowlist_narrows_the_environments_and_never_widens_it(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["/m.bin"] = serve(BODY)
    url = server.url("/m.bin")

    monkeypatch.setenv("EDGE_BUILDER_ALLOWLIST", "example.com")
    with pytest.raises(FetchError) as info:
        fetcher(tmp_path, allowlist=["127.0.0.1"]).fetch([url])
    assert ("blocked by allowlist: host 127.0.0.1 not in EDGE_BUILDER_ALLOWLIST=example.com "
            "(the recipe's allowlist 127.0.0.1 can narrow that list, not widen it)") in info.value.message
    assert "never widen" in info.value.hint
    assert server.requests == []

    monkeypatch.setenv("EDGE_BUILDER_ALLOWLIST", "127.0.0.1,localhost")
    with pytest.raises(FetchError) as info:
        fetcher(tmp_path, allowlist=["127.0.0.1"]).fetch([server.url("/m.bin", host="localhost")])
    assert ("host localhost not in the recipe's allowlist 127.0.0.1 "
            "(within EDGE_BUILDER_ALLOWLIST=127.0.0.1,localhost)") in info.value.message
    assert server.requests == []
    assert fetcher(tmp_path, allowlist=["127.0.0.1"]).fetch([url]).path.read_bytes() == BODY


def test_a_recipe_cannot_widen_the_allowlist_through_builder_inputs(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case, end to end: every mirror's reason lands in missing.txt."""
    server.routes["/m.tflite"] = serve(BODY)
    monkeypatch.setenv("EDGE_BUILDER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGE_BUILDER_ALLOWLIST", "example.com")
    recipe = tmp_path / "r.yaml"
    urls = [server.url("/m.tflite"), server.url("/m.tflite", host="localhost")]
    recipe.write_text(f"name: widen\nsource: {{download: {{urls: {json.dumps(urls)}, allowlist: [127.0.0.1]}}}}\n"
                      "input: {shape: [1, 8, 8, 3]}\nvariants: [fp32]\n")

    with pytest.raises(FetchError, match="not in EDGE_BUILDER_ALLOWLIST=example.com"):
        inputs.materialize(load_recipe(recipe), tmp_path / "w")

    assert server.requests == []
    name, reason, *mirrors = (tmp_path / "w" / "missing.txt").read_text().rstrip("\n").split("\t")
    assert (name, mirrors) == ("model:m.tflite", urls)
    assert reason == (f"could not fetch m.tflite from any of 2 mirror(s): "
                      f"{urls[0]}: blocked by allowlist: host 127.0.0.1 not in EDGE_BUILDER_ALLOWLIST=example.com "
                      "(the recipe's allowlist 127.0.0.1 can narrow that list, not widen it); "
                      f"{urls[1]}: blocked by allowlist: host localhost not in EDGE_BUILDER_ALLOWLIST=example.com "
                      "(the recipe's allowlist 127.0.0.1 can narrow that list, not widen it)")


def test_allowlist_comes_from_the_environment(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["/m.bin"] = serve(BODY)
    url = server.url("/m.bin")

    monkeypatch.setenv("DOMAIN_ALLOWLIST", "example.com")  # the seed's variable
    with pytest.raises(FetchError, match="blocked by allowlist"):
        fetcher(tmp_path).fetch([url])
    monkeypatch.setenv("EDGE_BUILDER_ALLOWLIST", "example.com,127.0.0.1")  # takes precedence
    assert fetcher(tmp_path).fetch([url]).path.read_bytes() == BODY


@pytest.mark.parametrize("environment, recipe, refused", [
    (None, ["127.0.0.1"], "host localhost not in the recipe's allowlist 127.0.0.1"),
    ("127.0.0.1", None, "host localhost not in EDGE_BUILDER_ALLOWLIST=127.0.0.1"),
    ("127.0.0.1", ["127.0.0.1", "localhost"], "host localhost not in EDGE_BUILDER_ALLOWLIST=127.0.0.1 "
                                              "(the recipe's allowlist 127.0.0.1,localhost can narrow"),
], ids=["recipe", "environment", "recipe-cannot-widen"])
def test_redirects_to_a_blocked_host_are_refused(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 environment: str | None, recipe: list[str] | None,
                                                 refused: str) -> None:
    server.routes["/m.bin"] = serve(BODY)
    server.routes["/go"] = status(302, {"Location": server.url("/m.bin", host="localhost")})
    if environment:
        monkeypatch.setenv("EDGE_BUILDER_ALLOWLIST", environment)

    with pytest.raises(FetchError) as info:
        fetcher(tmp_path, allowlist=recipe).fetch([server.url("/go")], filename="m.bin")

    assert refused in info.value.message
    assert len(server.hits("/go")) == 1 and server.hits("/m.bin") == []


# --- proxies ------------------------------------------------------------------------


@pytest.mark.parametrize("url, proxied", [
    ("http://models.example.com/m.bin", "http://models.example.com/m.bin"),  # the proxy answers the GET
    ("https://models.example.com/m.bin", "models.example.com:443"),  # the proxy answers the CONNECT
], ids=["http", "https"])
def test_a_proxy_asking_for_credentials_gets_its_own_cause_and_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, proxied: str) -> None:
    proxy = Server()
    proxy.routes[proxied] = status(407, {"Proxy-Authenticate": 'Basic realm="corp"'})
    for var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(var, proxy.url(""))
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    try:
        with pytest.raises(FetchError) as info:
            fetcher(tmp_path).fetch([url])
    finally:
        proxy.stop()

    assert f"{url}: proxy authentication required (" in info.value.message
    assert "407 Proxy Authentication Required" in info.value.message
    assert "HTTPS_PROXY" in info.value.hint and "user:password" in info.value.hint
    assert "proxy's allowlist" in info.value.hint
    assert [path for path, _ in proxy.requests] == [proxied]  # not retried: a retry brings no credentials
    cause, hint = classify({"status": "failed", "error": info.value.message, "cause": "error"})
    assert cause == "proxy-auth" and "user:password" in hint


# --- archive members ------------------------------------------------------------

MEMBER = b"TFL3" + BODY


def make_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("archive_name, archive", [
    ("ssd.zip", make_zip({"ssd/README": b"readme", "ssd/models/detect.tflite": MEMBER})),
    ("ssd.tar.gz", make_tar([("./ssd/README", b"readme"), ("./ssd/models/detect.tflite", MEMBER)])),
    ("ssd.tar", make_tar([("ssd/models/detect.tflite", MEMBER)], mode="w")),
], ids=["zip", "tar.gz", "tar"])
def test_archive_member_is_extracted_and_cached(server: Server, tmp_path: Path, archive_name: str,
                                                archive: bytes) -> None:
    server.routes[f"/{archive_name}"] = serve(archive)
    url = server.url(f"/{archive_name}")

    by_path = fetcher(tmp_path).fetch([url], sha256=sha(archive), member="ssd/models/detect.tflite")
    by_name = fetcher(tmp_path).fetch([url], member="detect.tflite")

    assert by_path.path.read_bytes() == MEMBER and by_path.path.name == "detect.tflite"
    assert (by_path.sha256, by_path.size, by_path.archive_sha256) == (sha(MEMBER), len(MEMBER), sha(archive))
    assert (by_path.url, by_path.from_cache) == (url, False)
    assert by_path.path == tmp_path / "cache" / "sha256" / sha(MEMBER) / "detect.tflite"
    assert (by_name.path, by_name.from_cache) == (by_path.path, True)
    assert len(server.requests) == 1


def test_member_symlink_inside_the_archive_is_followed(server: Server, tmp_path: Path) -> None:
    archive = make_tar([("pkg/v2/model.tflite", MEMBER), link("pkg/latest.tflite", "v2/model.tflite"),
                        link("pkg/hard.tflite", "pkg/v2/model.tflite", tarfile.LNKTYPE)])
    server.routes["/a.tgz"] = serve(archive)

    for member in ("pkg/latest.tflite", "hard.tflite"):
        assert fetcher(tmp_path).fetch([server.url("/a.tgz")], member=member).path.read_bytes() == MEMBER


def test_member_not_found_or_ambiguous_lists_the_archive(server: Server, tmp_path: Path) -> None:
    server.routes["/a.zip"] = serve(make_zip({"a/m.tflite": b"1", "b/m.tflite": b"2"}))
    server.routes["/plain.bin"] = serve(BODY)

    with pytest.raises(FetchError, match=r"no member 'x.tflite' in a.zip \(it has: a/m.tflite, b/m.tflite\)"):
        fetcher(tmp_path).fetch([server.url("/a.zip")], member="x.tflite")
    with pytest.raises(FetchError, match="ambiguous in a.zip: a/m.tflite, b/m.tflite"):
        fetcher(tmp_path).fetch([server.url("/a.zip")], member="m.tflite")
    with pytest.raises(FetchError, match="not a zip or tar archive"):
        fetcher(tmp_path).fetch([server.url("/plain.bin")], member="m.tflite")


def device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


@pytest.mark.parametrize("archive, member, refused", [
    (make_tar([("../evil", b"pwned"), ("ok.txt", b"ok")]), "evil", "'../evil'"),
    (make_tar([("../evil", b"pwned")]), "../evil", "'../evil'"),
    (make_tar([("/tmp/evil", b"pwned")]), "/tmp/evil", "'/tmp/evil'"),
    (make_zip({"../../evil": b"pwned"}), "evil", "'../../evil'"),
    (make_tar([link("evil", "/etc/passwd")]), "evil", "symlink to absolute path '/etc/passwd'"),
    (make_tar([link("d/evil", "../../outside")]), "evil", "points outside the archive"),
    (make_tar([link("evil", "../secret", tarfile.LNKTYPE)]), "evil", "hardlink to '../secret' points outside"),
    (make_tar([device("evil")]), "evil", "it is a device file"),
], ids=["dotdot-by-name", "dotdot-path", "absolute", "zip-dotdot", "symlink-absolute", "symlink-outside",
        "hardlink-outside", "device"])
def test_hostile_archives_are_refused_and_write_nothing(server: Server, tmp_path: Path, archive: bytes,
                                                        member: str, refused: str) -> None:
    server.routes["/evil.tar.gz"] = serve(archive)

    with pytest.raises(FetchError, match="refusing member") as info:
        fetcher(tmp_path).fetch([server.url("/evil.tar.gz")], member=member)

    assert refused in info.value.message
    for root in (tmp_path, tmp_path / "cache", tmp_path / "cache" / "tmp", Path.cwd(), Path.cwd().parent):
        assert not (root / "evil").exists()
    assert stored(tmp_path) == [tmp_path / "cache" / "sha256" / sha(archive) / "evil.tar.gz"]  # the archive only
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


# --- offline ------------------------------------------------------------------


def test_offline_run_is_served_from_the_cache(tmp_path: Path) -> None:
    srv = Server()
    archive = make_zip({"models/m.tflite": MEMBER})
    srv.routes.update({"/m.bin": serve(BODY), "/a.zip": serve(archive)})
    urls, zip_url = [srv.url("/m.bin")], srv.url("/a.zip")
    fetcher(tmp_path).fetch(urls)
    fetcher(tmp_path).fetch([zip_url], member="models/m.tflite")
    srv.stop()

    offline = fetcher(tmp_path, offline=True)
    by_url = offline.fetch(["http://mirror.invalid/m.bin", *urls])  # no sha256: found by URL
    by_sha = offline.fetch(["http://mirror.invalid/m.bin"], sha256=sha(BODY))
    member = offline.fetch([zip_url], member="m.tflite")

    assert (by_url.url, by_url.from_cache, by_url.path.read_bytes()) == (urls[0], True, BODY)
    assert (by_sha.url, by_sha.from_cache, by_sha.sha256) == (urls[0], True, sha(BODY))  # where it came from
    assert (member.path.read_bytes(), member.from_cache, member.archive_sha256) == (MEMBER, True, sha(archive))
    assert member.url == zip_url


def test_a_cache_hit_says_where_and_when_the_bytes_were_first_fetched(server: Server, tmp_path: Path) -> None:
    server.routes.update({"/a/m.bin": serve(BODY), "/b/m.bin": serve(BODY)})
    first = fetcher(tmp_path).fetch([server.url("/a/m.bin")])
    other = fetcher(tmp_path).fetch([server.url("/b/m.bin")])  # the same bytes again, from another mirror

    hits = [fetcher(tmp_path, offline=True).fetch(["http://mirror.invalid/m.bin"], sha256=sha(BODY)),
            fetcher(tmp_path, offline=True).fetch([server.url("/b/m.bin")])]

    assert (first.from_cache, other.from_cache, other.url) == (False, False, server.url("/b/m.bin"))
    assert datetime.fromisoformat(first.fetched_at).utcoffset().total_seconds() == 0
    assert [(h.url, h.fetched_at, h.from_cache) for h in hits] == [(first.url, first.fetched_at, True)] * 2
    origin = tmp_path / "cache" / "sha256" / f"{sha(BODY)}.origin.json"
    assert json.loads(origin.read_text()) == {"url": first.url, "fetched_at": first.fetched_at}
    assert sorted(p.name for p in origin.parent.iterdir()) == [sha(BODY), origin.name]  # no temp file left


def test_builder_inputs_records_where_a_cache_hit_came_from(server: Server, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    server.routes["/m.tflite"] = serve(BODY)
    monkeypatch.setenv("EDGE_BUILDER_CACHE", str(tmp_path / "cache"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: hit\nsource: {{download: {{urls: ['{server.url('/m.tflite')}'], sha256: {sha(BODY)}}}}}\n"
                      "input: {shape: [1, 8, 8, 3]}\nvariants: [fp32]\n")

    (first,) = inputs.materialize(load_recipe(recipe), tmp_path / "w1").fetched
    recipe.write_text(recipe.read_text().replace(server.url("/m.tflite"), "http://mirror.invalid/m.tflite"))
    (hit,) = inputs.materialize(load_recipe(recipe), tmp_path / "w2", offline=True).fetched

    assert (first["from_cache"], hit["from_cache"]) == (False, True)
    assert (hit["url"], hit["fetched_at"]) == (server.url("/m.tflite"), first["fetched_at"]) != (None, None)


def test_offline_miss_fails_without_network_and_is_written_to_missing(server: Server, tmp_path: Path) -> None:
    server.routes["/m.tflite"] = serve(BODY)
    urls = [server.url("/m.tflite"), "https://storage.googleapis.com/m.tflite"]

    with pytest.raises(FetchError) as info:
        fetcher(tmp_path, offline=True).fetch(urls)

    assert server.requests == []
    assert info.value.message.count("offline and not in cache") == 2
    assert "without --offline" in info.value.hint
    missing = tmp_path / "logs" / "missing.txt"
    write_missing(missing, [("mobilenet_v2", urls, info.value.message), ("ssd", ["http://x/ssd.zip"], "404\tgone")])
    lines = missing.read_text().splitlines()
    assert len(lines) == 2
    name, reason, *mirrors = lines[0].split("\t")
    assert (name, mirrors) == ("mobilenet_v2", urls)
    assert reason == (f"could not fetch m.tflite from any of 2 mirror(s): {urls[0]}: offline and not in cache; "
                      f"{urls[1]}: offline and not in cache")
    assert lines[1].split("\t") == ["ssd", "404 gone", "http://x/ssd.zip"]
    assert [p.name for p in missing.parent.iterdir()] == ["missing.txt"]  # no temp file left


# --- pip package members ---------------------------------------------------------


@pytest.mark.network
def test_pip_member_comes_from_a_real_wheel_and_then_from_the_cache(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int | None]] = []

    online = fetcher(tmp_path, progress=lambda *call: calls.append(call)).fetch_pip_member("six", "1.16.0", "six.py")
    offline = fetcher(tmp_path, offline=True).fetch_pip_member("six", "1.16.0", "six.py")

    assert calls[0] == ("pip download six==1.16.0", 0, None)
    text = online.path.read_text()
    assert online.path.name == "six.py" and '__version__ = "1.16.0"' in text
    assert (online.sha256, online.size) == (sha(text.encode()), len(text.encode()))
    assert online.url == "pip:six==1.16.0" and online.archive_sha256 and not online.from_cache
    assert (offline.path, offline.sha256, offline.from_cache) == (online.path, online.sha256, True)
    wheel = tmp_path / "cache" / "sha256" / online.archive_sha256 / "six-1.16.0-py2.py3-none-any.whl"
    assert wheel.is_file()


@pytest.mark.network
def test_pip_failure_shows_pips_last_lines(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"pip download six==0\.0\.1 failed") as info:
        fetcher(tmp_path).fetch_pip_member("six", "0.0.1", "six.py")

    assert any("six==0.0.1" in line for line in info.value.log_tail)


def test_pip_member_offline_miss_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="six.py of six==1.16.0: offline and not in cache"):
        fetcher(tmp_path, offline=True).fetch_pip_member("six", "1.16.0", "six.py")
    with pytest.raises(ConfigError, match="invalid pip package"):
        fetcher(tmp_path).fetch_pip_member("--index-url=http://evil", "1", "x")
    assert not os.path.exists(tmp_path / "cache" / "sha256")
