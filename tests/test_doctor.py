"""`builder doctor`: every check is shown and each can fail, with its fix (exit 1). The engine checks run
against the real engine, or a stand-in answering the Docker API; proxies and indexes are local servers."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError

import pytest

from builder.host import doctor as doctor_module
from builder.host.doctor import NO_PROXY_VARS, PROXY_VARS

CHECKS = ("docker engine", "arm64 (", "NVIDIA container runtime", "base image edge-builder/base:bookworm-amd64",
          "base image edge-builder/base:bookworm-arm64", "free disk at", "proxy:", "CA bundle:", "pip index:")

# No proxy, no pip configuration but what a test gives, no engine: only what a test sets up answers.
ISOLATED = {
    **{name: None for name in (*PROXY_VARS, *NO_PROXY_VARS, "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX",
                               "PIP_PROXY", "PIP_TRUSTED_HOST")},
    "PIP_CONFIG_FILE": os.devnull,
    "DOCKER_HOST": "unix:///nonexistent/docker.sock",
}


def doctor(*args: str, **env: str | None) -> subprocess.CompletedProcess:
    """`builder doctor ARGS` with `env` over this process's environment (None unsets a variable)."""
    merged = {**os.environ, "COLUMNS": "250", **env}
    return subprocess.run([sys.executable, "-m", "builder.host.cli", "doctor", *args], capture_output=True, text=True,
                          env={k: v for k, v in merged.items() if v is not None}, timeout=120)


def isolated(*args: str, **env: str) -> subprocess.CompletedProcess:
    """doctor() where only what `env` sets up exists (see ISOLATED)."""
    return doctor(*args, **ISOLATED | env)


def lines_of(proc: subprocess.CompletedProcess, mark: str) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith(mark)]


def problems(proc: subprocess.CompletedProcess) -> list[str]:
    """The ✗ lines, but free disk's: that verdict is the host's (tested on its own below)."""
    return [line for line in lines_of(proc, "✗") if "free disk at" not in line]


@pytest.mark.docker
def test_every_check_passes_on_a_prepared_engine(docker_engine, base_image, base_image_arm64):
    proc = doctor()
    assert proc.returncode == (1 if lines_of(proc, "✗ free disk") else 0), proc.stdout
    for name in CHECKS:
        assert any(name in line for line in lines_of(proc, "✓") + lines_of(proc, "✗ free disk")), name
    assert problems(proc) == []


@pytest.mark.docker
def test_a_missing_base_image_is_a_problem_with_its_fix(docker_engine, base_image, tmp_path):
    mapping = tmp_path / "bases.yaml"
    mapping.write_text("python:3.11-slim-bookworm: edge-builder-test/no-such-base:1\n")
    proc = doctor(EDGE_BUILDER_BASE_IMAGES=str(mapping))
    assert proc.returncode == 1
    found = problems(proc)
    assert found and all("base image edge-builder-test/no-such-base:1" in p for p in found)
    assert any("(linux/arm64)" in p and "rpi device" in p for p in found)
    assert "fix: docker pull it, or map it" in proc.stdout


def test_unreachable_engine_and_bad_ca_bundle_are_problems_and_the_rest_still_runs(tmp_path):
    proc = isolated("--ca-bundle", str(tmp_path / "missing.pem"), DOCKER_HOST="tcp://127.0.0.1:1", PIP_NO_INDEX="1")
    assert proc.returncode == 1
    found = problems(proc)
    assert [p.split(":")[0] for p in found] == ["✗ docker engine", "✗ CA bundle"]
    assert "127.0.0.1:1" in found[0] and "missing.pem" in found[1]
    assert proc.stdout.count("fix:") == 2 + len(lines_of(proc, "✗ free disk"))
    assert any("free disk at" in line for line in proc.stdout.splitlines())


def test_low_disk_is_a_problem_with_its_fix(tmp_path, monkeypatch):
    total = shutil.disk_usage(tmp_path)
    for free_gib, ok in ((doctor_module.DISK_NEEDED_GIB + 1, True), (doctor_module.DISK_NEEDED_GIB - 1, False)):
        monkeypatch.setattr(doctor_module.shutil, "disk_usage",
                            lambda _folder, free=free_gib: total._replace(free=free * 2**30))
        check = doctor_module.disk_check(tmp_path)
        assert (check.ok, check.detail) == (ok, f"{free_gib} GiB free")
        assert (check.fix is None) == ok and (ok or f"about {doctor_module.DISK_NEEDED_GIB} GiB" in check.fix)


def test_proxy_credentials_are_never_printed():
    proc = isolated(HTTPS_PROXY="http://alice:s3cret@proxy.corp:3128",
                  PIP_INDEX_URL="https://bob:t0ken@index.corp/simple")
    assert "s3cret" not in proc.stdout + proc.stderr and "t0ken" not in proc.stdout + proc.stderr
    assert "HTTPS_PROXY=http://***@proxy.corp:3128" in one(proc, "✗ proxy:")
    assert "HEAD https://***@index.corp/simple/ (PIP_INDEX_URL) via proxy http://***@proxy.corp:3128: no answer" in one(
        proc, "✗ pip index:")


# --- servers: an index, proxies, an engine ------------------------------------------------------------

Answer = Callable[[BaseHTTPRequestHandler], "int | tuple[int, dict | bytes]"]


@contextmanager
def serving(answer: Answer, tls: tuple[Path, Path] | None = None) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 (HTTPS with `tls`, a certificate and its key) answering every request
    with answer(request): (HOST:PORT, requests seen)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.command} {self.path}")
            answered = answer(self)
            status, body = answered if isinstance(answered, tuple) else (answered, b"")
            data = json.dumps(body).encode() if isinstance(body, dict) else body
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_HEAD = do_CONNECT = do_GET

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_port}", seen
    finally:
        server.shutdown()
        server.server_close()


def simple_index(request: BaseHTTPRequestHandler) -> int:
    return 200 if request.path == "/simple/" else 404


def forward(request: BaseHTTPRequestHandler) -> int:
    """A forward proxy: the request line holds the whole URL, sent on directly."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(urllib.request.Request(request.path, method=request.command), timeout=10) as response:
            return response.status
    except HTTPError as exc:
        return exc.code


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one(proc: subprocess.CompletedProcess, mark: str) -> str:
    """The only line that starts with `mark`, and the fix printed under it."""
    lines = proc.stdout.splitlines()
    found = [i for i, line in enumerate(lines) if line.startswith(mark)]
    assert len(found) == 1, proc.stdout
    below = lines[found[0] + 1] if found[0] + 1 < len(lines) else ""
    return lines[found[0]] + ("\n" + below if below.startswith("    fix:") else "")


# --- proxy and pip indexes ----------------------------------------------------------------------------


def test_the_index_is_reached_through_the_proxy_and_what_answered_is_reported():
    with serving(simple_index) as (index, index_seen), serving(forward) as (proxy, proxy_seen):
        proc = isolated(HTTP_PROXY=f"http://{proxy}", PIP_INDEX_URL=f"http://{index}/simple")
    assert f"HTTP_PROXY=http://{proxy} answers" in one(proc, "✓ proxy:")
    assert re.search(rf"^✓ pip index: HEAD http://{index}/simple/ \(PIP_INDEX_URL\) via proxy http://{proxy} -> 200 "
                     rf"from http://{index}/simple/ \(server BaseHTTP/[\d.]+ Python/[\d.]+\), \d+ ms$",
                     one(proc, "✓ pip index:"))
    assert proxy_seen == [f"HEAD http://{index}/simple/"] and index_seen == ["HEAD /simple/"]


def test_no_proxy_reaches_the_index_directly():
    with serving(simple_index) as (index, index_seen), serving(forward) as (proxy, proxy_seen):
        proc = isolated(HTTP_PROXY=f"http://{proxy}", NO_PROXY="127.0.0.1",
                      PIP_INDEX_URL=f"http://{index}/simple/")
    assert f"HEAD http://{index}/simple/ (PIP_INDEX_URL) direct -> 200" in one(proc, "✓ pip index:")
    assert "NO_PROXY=127.0.0.1" in one(proc, "✓ proxy:")
    assert (proxy_seen, index_seen) == ([], ["HEAD /simple/"])


def test_an_index_url_that_is_no_simple_root_fails_with_the_status_and_a_fix():
    with serving(simple_index) as (index, _):
        proc = isolated(PIP_INDEX_URL=f"http://{index}/pypi")
    assert proc.returncode == 1
    line = one(proc, "✗ pip index:")
    assert f"HEAD http://{index}/pypi/ (PIP_INDEX_URL) direct -> 404 from http://{index}/pypi/" in line
    assert "fix: that is not an index's simple API root: the index URL usually ends in /simple/" in line


def test_a_dead_proxy_fails_and_so_does_the_index_behind_it():
    dead = f"http://127.0.0.1:{closed_port()}"
    with serving(simple_index) as (index, index_seen):
        proc = isolated(HTTPS_PROXY=dead, http_proxy=dead, PIP_INDEX_URL=f"http://{index}/simple/")
    assert proc.returncode == 1
    proxy = one(proc, "✗ proxy:")
    assert f"HTTPS_PROXY={dead} does not answer (" in proxy and f"http_proxy={dead} does not answer (" in proxy
    assert "fix: start the proxy, or correct or unset HTTPS_PROXY, http_proxy" in proxy
    line = one(proc, "✗ pip index:")
    assert f"HEAD http://{index}/simple/ (PIP_INDEX_URL) via proxy {dead}: no answer (" in line
    assert "fix: the proxy or the index did not answer: see the proxy check" in line
    assert index_seen == []


def test_pips_own_proxy_setting_is_the_one_used_and_checked(tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}"
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nproxy = {dead}\n")
    with serving(simple_index) as (index, index_seen), serving(forward) as (proxy, proxy_seen):
        proc = isolated(PIP_CONFIG_FILE=str(config), HTTP_PROXY=f"http://{proxy}",
                      PIP_INDEX_URL=f"http://{index}/simple/")
    assert f"HTTP_PROXY=http://{proxy} answers; pip proxy={dead} does not answer (" in one(proc, "✗ proxy:")
    assert f"via proxy {dead}: no answer" in one(proc, "✗ pip index:")
    assert (proxy_seen, index_seen) == ([], [])


def test_a_proxy_that_wants_credentials_gets_its_own_fix():
    with serving(lambda request: 407) as (proxy, proxy_seen):
        proc = isolated(HTTP_PROXY=f"http://{proxy}", HTTPS_PROXY=f"http://{proxy}",
                        PIP_INDEX_URL="http://index.invalid/simple/", PIP_EXTRA_INDEX_URL="https://index.invalid/simple/")
    assert f"HTTP_PROXY=http://{proxy} answers" in one(proc, "✓ proxy:")
    line = one(proc, "✗ pip index:")
    assert f"via proxy http://{proxy} -> 407" in line and "fix: the proxy wants credentials" in line
    line = one(proc, "✗ pip extra index:")  # https: the proxy refuses the tunnel
    assert f"via proxy http://{proxy}: no answer (Tunnel connection failed: 407" in line
    assert "fix: the proxy wants credentials" in line
    assert proxy_seen == ["HEAD http://index.invalid/simple/", "CONNECT index.invalid:443"]


def test_an_unreachable_index_and_a_missing_extra_index_each_fail(tmp_path):
    index = f"http://127.0.0.1:{closed_port()}/simple/"
    here = tmp_path.as_uri()
    proc = isolated(PIP_INDEX_URL=index, PIP_EXTRA_INDEX_URL=f"{here} {here}/gone {tmp_path}")
    assert proc.returncode == 1
    line = one(proc, "✗ pip index:")
    assert f"HEAD {index} (PIP_INDEX_URL) direct: no answer (" in line and "fix: check the network" in line
    extras = [line for line in proc.stdout.splitlines() if "pip extra index:" in line]
    assert extras == [f"✓ pip extra index: {here} (PIP_EXTRA_INDEX_URL): a folder here",
                      f"✗ pip extra index: {here}/gone (PIP_EXTRA_INDEX_URL): no such folder",
                      f"✗ pip extra index: {tmp_path} (PIP_EXTRA_INDEX_URL): not an http(s):// or file:// URL"]


def test_an_https_index_is_trusted_through_the_ca_bundle_or_trusted_host(tmp_path):
    cert, key = tmp_path / "index.pem", tmp_path / "index.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=index",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    with serving(simple_index, tls=(cert, key)) as (index, seen):
        untrusted = isolated(PIP_INDEX_URL=f"https://{index}/simple/")
        bundle = isolated("--ca-bundle", str(cert), PIP_INDEX_URL=f"https://{index}/simple/")
        trusted_host = isolated(PIP_INDEX_URL=f"https://{index}/simple/", PIP_TRUSTED_HOST=index)
    line = one(untrusted, "✗ pip index:")
    assert "no answer (" in line and "CERTIFICATE_VERIFY_FAILED" in line and "fix: trust the index's CA" in line
    assert f"direct -> 200 from https://{index}/simple/" in one(bundle, "✓ pip index:")
    assert f"direct -> 200 from https://{index}/simple/" in one(trusted_host, "✓ pip index:")
    assert seen == ["HEAD /simple/", "HEAD /simple/"]


def test_no_index_is_reported_and_the_index_is_not_contacted():
    with serving(simple_index) as (index, seen):
        proc = isolated(PIP_NO_INDEX="1", PIP_INDEX_URL=f"http://{index}/simple/")
    assert "✓ pip index: none: no-index is set (PIP_NO_INDEX); pip installs from find-links only" in proc.stdout
    assert seen == []


def test_a_pip_configuration_that_pip_cannot_read_is_a_problem(tmp_path):
    config = tmp_path / "pip.conf"
    config.write_text("[global\nindex-url = x\n")
    proc = isolated(PIP_CONFIG_FILE=str(config))
    assert proc.returncode == 1
    line = one(proc, "✗ pip configuration:")
    assert "`pip config list` failed: Configuration file could not be loaded." in line and str(config) in line
    assert "fix: fix the file it names" in line
    assert "pip index" not in proc.stdout


@pytest.mark.network
def test_the_machines_own_index_answers():
    proc = doctor(DOCKER_HOST="tcp://127.0.0.1:1")
    assert re.search(r"^✓ pip index: HEAD \S+ \(.+\) (direct|via proxy \S+) -> 200 from ", one(proc, "✓ pip index:"))


# --- what a target needs from the engine --------------------------------------------------------------


def engine_without_nvidia(request: BaseHTTPRequestHandler) -> int | tuple[int, dict | bytes]:
    """A Docker engine's API, as far as doctor reads it: an amd64 engine with runc only and no images."""
    path = re.sub(r"^/v[\d.]+", "", request.path.split("?")[0])
    if path == "/_ping":
        return 200, b"OK"
    if path == "/version":
        return 200, {"Version": "27.5.1", "ApiVersion": "1.45", "Arch": "amd64", "Os": "linux"}
    if path == "/info":
        return 200, {"Runtimes": {"runc": {"path": "runc"}}}
    return 404, {"message": "No such image"}


def test_the_nvidia_runtime_is_a_problem_only_for_a_target_asked_for_that_needs_it():
    with serving(engine_without_nvidia) as (engine, _):
        asked = isolated("-t", "x86-tflite", "-t", "jetson", DOCKER_HOST=f"tcp://{engine}")
        others = isolated("-t", "x86-tflite", DOCKER_HOST=f"tcp://{engine}")
    assert f"✓ docker engine: engine 27.5.1 (amd64) at tcp://{engine}" in asked.stdout
    line = one(asked, "✗ NVIDIA container runtime:")
    assert "absent, and jetson (-t) needs it for its device stage on this engine" in line
    assert "fix: install the NVIDIA container toolkit here" in line
    assert "absent: jetson needs it, on its device's engine" in one(others, "✓ NVIDIA container runtime:")


def test_an_unknown_target_is_a_config_error():
    proc = isolated("-t", "no-such-target")
    assert proc.returncode == 2 and "unknown target 'no-such-target'" in proc.stdout + proc.stderr


def jetson_engine_with_runc_as_default(request: BaseHTTPRequestHandler) -> int | tuple[int, dict | bytes]:
    """A JetPack engine as installed: the NVIDIA runtime registered, runc still the default."""
    path = re.sub(r"^/v[\d.]+", "", request.path.split("?")[0])
    if path == "/info":
        return 200, {"Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}},
                     "DefaultRuntime": "runc"}
    return engine_without_nvidia(request)


def test_doctor_for_jetson_says_the_default_runtime_and_how_to_make_it_nvidia():
    with serving(jetson_engine_with_runc_as_default) as (engine, _):
        proc = isolated("-t", "jetson", DOCKER_HOST=f"tcp://{engine}")
    line = one(proc, "✓ NVIDIA container runtime:")
    assert "present; default runtime runc: enough for builder" in line
    assert "fix: sudo nvidia-ctk runtime configure --runtime=docker --set-as-default" in line
