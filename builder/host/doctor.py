"""`builder doctor`: what this machine can do, and the fix for each problem found.

Every check can fail: the engine lacks what a target asked for needs, a proxy does not answer, a
pip index does not answer (it is contacted as pip would: through pip's proxy, with its CA)."""

from __future__ import annotations

import ast
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlsplit

from builder import __version__
from builder.config.target import Target
from builder.errors import ConfigError
from builder.host import catalog, container_runtimes

PROBE_SECONDS = 10.0
DISK_NEEDED_GIB = 15
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
NO_PROXY_VARS = ("NO_PROXY", "no_proxy")
_SIMPLE_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0.01"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password or parts.username:
        return url.replace(parts.netloc, f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else ""))
    return url


def checks(ca_bundle: Path | None = None, targets: tuple[str, ...] = ()) -> list[Check]:
    """Every check, in order; `targets` are the ones whose device stage is to run on this engine."""
    from builder.host.image_build import find_ca_bundle
    from builder.host.inputs import cache_dir

    wanted = [catalog.load_target(target) for target in targets]  # an unknown id stops here, exit 2
    out = _engine_checks(wanted)
    out += [disk_check(folder) for folder in (cache_dir(), Path.cwd())]
    try:
        pip = PipConfig.read()
    except ConfigError as exc:
        pip = None
        out.append(Check("pip configuration", False, exc.message, exc.hint))
    out.append(_proxy_check(pip.get("proxy") if pip else None))
    ca = None
    try:
        ca = find_ca_bundle(ca_bundle)
        out.append(Check("CA bundle", True, f"{ca} (passed to pip and downloads)" if ca else "none set: system trust store"))
    except ConfigError as exc:
        out.append(Check("CA bundle", False, exc.message, exc.hint))
    if pip:
        out += _index_checks(pip, ca)
    return out


def disk_check(folder: Path) -> Check:
    free = shutil.disk_usage(folder if folder.exists() else Path.home()).free / 2**30
    ok = free > DISK_NEEDED_GIB
    return Check(f"free disk at {folder}", ok, f"{free:.0f} GiB free",
                 None if ok else f"images and wheelhouses need about {DISK_NEEDED_GIB} GiB")


def _engine_checks(wanted: list[Target]) -> list[Check]:
    from builder.host.docker_api import Engine
    from builder.host.images import image_platform, resolve_base

    ok, why = Engine.available()
    out = [Check("docker engine", ok, why, None if ok else "start Docker (see README: .ci/engine.sh), set DOCKER_HOST, "
                 "or use --runner local")]
    if not ok:
        return out
    engine = Engine.connect()
    arm_ok, arm_why = engine.binfmt_arm64()
    targets = catalog.load_targets().values()
    arm64 = ", ".join(t.id for t in targets if t.platform == "linux/arm64")
    out.append(Check(f"arm64 ({arm64} device images)", arm_ok, arm_why,
                     None if arm_ok else "apt-get install -y qemu-user-static binfmt-support"))
    facts = engine.facts()
    required = {t.requires.container_runtime for t in targets if t.requires.container_runtime}
    for name in sorted(required | container_runtimes.known().keys()):
        out.append(_runtime_check(container_runtimes.get(name), name in facts["runtimes"],
                                  [t.id for t in wanted if t.requires.container_runtime == name],
                                  [t.id for t in targets if t.requires.container_runtime == name],
                                  facts.get("default_runtime")))
    users: dict[tuple[str, str], list[str]] = {}
    runnable: set[tuple[str, str]] = set()  # bases of targets this engine can run
    for target in targets:
        for role in ("toolchain", "device"):
            spec = getattr(target.images, role)
            platform = image_platform(target, role, engine.platform)
            key = (resolve_base(spec.base, platform), platform)
            users.setdefault(key, []).append(f"{target.id} {role}")
            if target.requires.container_runtime in (None, *facts["runtimes"]):
                runnable.add(key)
    for (base, platform), who in users.items():
        present = engine.image_id(base) is not None
        needed = (base, platform) in runnable
        detail = ("present" if present else "not on the engine") + f"; used by {', '.join(who)}"
        if not present and not needed:
            detail += " (not needed here: it needs a container runtime this engine lacks)"
        out.append(Check(f"base image {base} ({platform})", present or not needed, detail,
                         None if present or not needed else
                         "docker pull it, or map it to a local image with EDGE_BUILDER_BASE_IMAGES"))
    return out


def _runtime_check(runtime: container_runtimes.ContainerRuntime, present: bool, wanted: list[str],
                   needing: list[str], default: str | None = None) -> Check:
    if present:
        note, fix = runtime.default_note(default)
        return Check(runtime.title, True, f"present; {note}", fix)
    if wanted:
        return Check(runtime.title, False, f"absent, and {', '.join(wanted)} (-t) needs it for its device stage on "
                     "this engine", f"{runtime.install_fix('here')}, or run the device stage on the device's own "
                     "engine (--device, or a fleet)")
    return Check(runtime.title, True, f"absent: {', '.join(needing) or 'no target'} needs it, on its device's engine "
                                      "(`builder doctor -t ID` checks this engine for a target)")


# --- pip and the network ----------------------------------------------------------------------------


@dataclass
class PipConfig:
    """pip's settings as `pip config list` shows them: {"global.index-url": ..., ":env:.proxy": ...}."""

    values: dict[str, str]

    @classmethod
    def read(cls) -> PipConfig:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            said = " ".join(proc.stderr.split())[:300] or f"exit {proc.returncode}"
            raise ConfigError(f"`pip config list` failed: {said}",
                              hint="fix the file it names (`pip config debug` lists pip's files and variables)")
        values = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("=")
            values[key] = ast.literal_eval(value)  # pip prints each value with repr()
        return cls(values)

    def get(self, name: str) -> str | None:
        return self.origin(name)[0]

    def origin(self, name: str) -> tuple[str | None, str]:
        """(value, where it is set) in `pip install`'s order: environment, then [install], then [global]."""
        for section in (":env:", "install", "global"):
            if f"{section}.{name}" in self.values:
                where = f"PIP_{name.upper().replace('-', '_')}" if section == ":env:" else f"pip config {section}.{name}"
                return self.values[f"{section}.{name}"], where
        return None, "pip's default"


def _proxy_check(pip_proxy: str | None) -> Check:
    """Each proxy set (environment, pip's own) must accept a connection."""
    proxies = {k: os.environ[k] for k in PROXY_VARS if os.environ.get(k)}
    if pip_proxy:
        proxies["pip proxy"] = pip_proxy
    bypass = [f"{k}={os.environ[k]}" for k in NO_PROXY_VARS if os.environ.get(k)]
    if not proxies:
        return Check("proxy", True, "; ".join(["none set (direct)", *bypass]))
    parts, dead = [], []
    for name, url in proxies.items():
        why = _no_answer(url)
        parts.append(f"{name}={_redact(url)} " + ("answers" if why is None else f"does not answer ({why})"))
        if why:
            dead.append(name)
    return Check("proxy", not dead, "; ".join(parts + bypass),
                 f"start the proxy, or correct or unset {', '.join(dead)} (`pip config list` shows pip's own)"
                 if dead else None)


def _no_answer(proxy: str) -> str | None:
    """None if the proxy's host accepts a connection on its port, else why not."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        if not parts.hostname:
            return "no host in the URL"
        with socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                      timeout=PROBE_SECONDS):
            return None
    except (OSError, ValueError) as exc:  # ValueError: a port that is no number
        return str(exc) or type(exc).__name__


def _index_checks(pip: PipConfig, ca: Path | None) -> list[Check]:
    """Each index pip installs from, contacted through the proxy pip would use."""
    from pip._internal.models.index import PyPI  # pip's own default index, so that no host is written here

    out = []
    no_index, where = pip.origin("no-index")
    if no_index and no_index.lower() in ("1", "true", "yes", "on"):
        out.append(Check("pip index", True, f"none: no-index is set ({where}); pip installs from find-links only"))
    else:
        index, where = pip.origin("index-url")
        out.append(_index_check("pip index", index or PyPI.simple_url, where, pip, ca))
    extras, where = pip.origin("extra-index-url")
    out += [_index_check("pip extra index", url, where, pip, ca) for url in (extras or "").split()]
    return out


def _index_check(name: str, url: str, where: str, pip: PipConfig, ca: Path | None) -> Check:
    parts = urlsplit(url)
    if parts.scheme == "file":
        folder = Path(urllib.request.url2pathname(parts.path))
        return Check(name, folder.is_dir(), f"{url} ({where}): " + ("a folder here" if folder.is_dir() else "no such folder"),
                     None if folder.is_dir() else "create that folder, or take the URL out of pip's configuration")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return Check(name, False, f"{_redact(url)} ({where}): not an http(s):// or file:// URL",
                     "give the index's URL, e.g. https://HOST/simple/")
    root = url if url.endswith("/") else f"{url}/"
    netloc = parts.netloc.rpartition("@")[2]  # without credentials
    request = urllib.request.Request(root.replace(parts.netloc, netloc, 1), method="HEAD",
                                     headers={"Accept": _SIMPLE_ACCEPT, "User-Agent": f"edge-builder/{__version__}"})
    if parts.username:  # pip sends a URL's credentials as basic auth; urllib does not
        token = b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    proxy = pip.get("proxy")
    proxies = {"http": proxy, "https": proxy} if proxy else {
        k: v for k, v in urllib.request.getproxies().items() if k in ("http", "https")}
    bypassed = urllib.request.proxy_bypass(parts.hostname)
    via = f"via proxy {_redact(proxies[parts.scheme])}" if parts.scheme in proxies and not bypassed else "direct"
    asked = f"HEAD {_redact(root)} ({where}) {via}"
    started = time.perf_counter()
    try:
        handlers = [urllib.request.ProxyHandler({} if bypassed else proxies)]
        if parts.scheme == "https":
            handlers.append(urllib.request.HTTPSHandler(context=_tls_context(pip, ca, parts.hostname, netloc)))
        with urllib.request.build_opener(*handlers).open(request, timeout=PROBE_SECONDS) as response:
            status, answered, server = response.status, response.url, response.headers.get("Server")
    except HTTPError as exc:
        status, answered, server = exc.code, exc.url, exc.headers.get("Server")
    except (URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, URLError) else exc
        return Check(name, False, f"{asked}: no answer ({reason})", _unreachable_fix(reason, via))
    ms = (time.perf_counter() - started) * 1000
    detail = f"{asked} -> {status} from {_redact(answered)}" + (f" (server {server})" if server else "") + f", {ms:.0f} ms"
    return Check(name, 200 <= status < 300, detail, None if 200 <= status < 300 else _status_fix(status))


def _tls_context(pip: PipConfig, ca: Path | None, host: str | None, netloc: str) -> ssl.SSLContext:
    cafile = ca or pip.get("cert")
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if {host, netloc} & set((pip.get("trusted-host") or "").split()):  # pip does not verify a trusted host either
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def _status_fix(status: int) -> str:
    if status == 407:
        return "the proxy wants credentials: put them in its URL (http://user:password@host:port)"
    if status in (401, 403):
        return "the index refused this machine: give credentials in the index URL (https://user:token@host/...)"
    if status == 404:
        return "that is not an index's simple API root: the index URL usually ends in /simple/"
    return "check the index URL in pip's configuration (`pip config list`) and the proxy"


def _unreachable_fix(reason: object, via: str) -> str:
    if isinstance(reason, ssl.SSLError):
        return "trust the index's CA: --ca-bundle, SSL_CERT_FILE, or pip's cert setting"
    if "407" in str(reason):  # an https tunnel that the proxy refused
        return _status_fix(407)
    if via != "direct":
        return "the proxy or the index did not answer: see the proxy check, and NO_PROXY for hosts reached directly"
    return "check the network, or point pip at an index this machine reaches (`pip config set global.index-url URL`)"
