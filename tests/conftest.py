"""Shared pytest fixtures, one section per concern."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import sysconfig
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest

# --- what recipes the tests write may read ------------------------------------
# A recipe reads only files below its own folder (builder/config/paths.py). Recipes that tests write into
# tmp_path read real models and photos from installed packages (scikit-image's photos, mediapipe's models
# kept in pytest's cache), as a user allows their own data folders: with EDGE_BUILDER_ALLOW_PATHS.


@pytest.fixture(scope="session", autouse=True)
def _installed_data_is_allowed(request):
    roots = {sysconfig.get_paths()[name] for name in ("purelib", "platlib")} | {str(request.config.rootpath / ".pytest_cache")}
    given = [p for p in os.environ.get("EDGE_BUILDER_ALLOW_PATHS", "").split(os.pathsep) if p]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EDGE_BUILDER_ALLOW_PATHS", os.pathsep.join([*given, *sorted(roots)]))
        yield


# --- Docker ------------------------------------------------------------------
# Docker tests (marked `docker`) need a real engine: skipped without one, except
# when EDGE_BUILDER_REQUIRE_DOCKER=1 (CI), where a missing engine is a failure.

BASE_IMAGE_AMD64 = "edge-builder/base:bookworm-amd64"
BASE_IMAGE_ARM64 = "edge-builder/base:bookworm-arm64"


def _require_docker() -> bool:
    return os.environ.get("EDGE_BUILDER_REQUIRE_DOCKER") == "1"


def _no_docker(reason: str) -> None:
    if _require_docker():
        pytest.fail(f"{reason} (EDGE_BUILDER_REQUIRE_DOCKER=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine():
    """A connected builder.host.docker_api.Engine."""
    from builder.errors import EngineError
    from builder.host.docker_api import Engine

    try:
        return Engine.connect()
    except EngineError as exc:
        _no_docker(f"no Docker engine: {exc.message}")


@pytest.fixture(scope="session")
def base_image(docker_engine) -> str:
    """The local amd64 Debian base image made by .ci/base-images.sh."""
    if docker_engine.image_id(BASE_IMAGE_AMD64) is None:
        _no_docker(f"{BASE_IMAGE_AMD64} missing: run .ci/base-images.sh")
    return BASE_IMAGE_AMD64


@pytest.fixture(scope="session")
def base_image_arm64(docker_engine) -> str:
    """The local arm64 base image, on an engine that can run arm64."""
    ok, why = docker_engine.binfmt_arm64()
    if not ok:
        _no_docker(why)
    if docker_engine.image_id(BASE_IMAGE_ARM64) is None:
        _no_docker(f"{BASE_IMAGE_ARM64} missing: run .ci/base-images.sh")
    return BASE_IMAGE_ARM64


# --- Device engines ----------------------------------------------------------
# Stand-ins for devices, made by `eval "$(bash .ci/devices.sh up)"` (CI does it): Docker
# engines reached over ssh:// as a device's engine is, their direct sockets (for test setup
# and cleanup only) and an image registry on 127.0.0.1. Without them these tests skip,
# except when EDGE_BUILDER_REQUIRE_DOCKER=1 (CI), where that is a failure.
# docker-py reaches ssh:// through the `ssh` binary here (use_ssh_client, as the product
# does); it needs paramiko installed all the same (the `docker[ssh]` extra), and it does not
# apply its timeout to an ssh engine that hangs: hence the deadline in device_answers().

DEVICES_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "devices.sh"
DEVICE_ANSWER_SECONDS = 20


def _env_words(name: str) -> list[str]:
    words = os.environ.get(name, "").split()
    if not words:
        _no_docker(f'{name} is not set: run eval "$(bash .ci/devices.sh up)"')
    return words


def _device_client(url: str, timeout: float = 120):
    """A docker-py client for an engine URL, connected as the product connects (ssh binary for ssh://)."""
    import docker

    return docker.DockerClient(base_url=url, use_ssh_client=url.startswith("ssh://"), timeout=timeout)


def device_answers(url: str, seconds: float = DEVICE_ANSWER_SECONDS) -> str | None:
    """None if the engine at url answers a ping within `seconds`, else why not.

    The ping runs in a thread with a deadline, since a hung ssh engine would block it forever."""
    outcome: dict[str, str] = {}

    def ping() -> None:
        try:
            client = _device_client(url, timeout=seconds)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "does not answer"
            outcome["error"] = f"{type(exc).__name__}: {exc}"
        else:
            outcome["ok"] = "yes"

    thread = threading.Thread(target=ping, name=f"ping {url}", daemon=True)
    thread.start()
    thread.join(seconds)
    if "ok" in outcome:
        return None
    return outcome.get("error", f"no answer within {seconds:g}s")


def device_name(url_or_name: str) -> str:
    """ssh://root@eb-dev1:2201 -> eb-dev1 (the name .ci/devices.sh knows it by); a name stays."""
    return urllib.parse.urlsplit(url_or_name).hostname if "://" in url_or_name else url_or_name


def _answering(addresses: list[str], what: str) -> list[str]:
    for address in addresses:
        why = device_answers(address)
        if why:
            _no_docker(f"{what} {address} does not answer: {why}")
    return addresses


@pytest.fixture(scope="session")
def device_urls() -> list[str]:
    """The device engines' ssh:// URLs (EDGE_BUILDER_TEST_DEVICES), each checked to answer."""
    return _answering(_env_words("EDGE_BUILDER_TEST_DEVICES"), "device engine")


@pytest.fixture(scope="session")
def device_sockets(device_urls) -> list[str]:
    """The same engines' unix:// sockets (EDGE_BUILDER_TEST_DEVICE_SOCKETS), in the same order:
    for test setup and cleanup only; the product reaches devices through device_urls."""
    sockets = _env_words("EDGE_BUILDER_TEST_DEVICE_SOCKETS")
    if len(sockets) != len(device_urls):
        pytest.fail(f"EDGE_BUILDER_TEST_DEVICE_SOCKETS has {len(sockets)} sockets for {len(device_urls)} "
                    "devices", pytrace=False)
    return _answering(sockets, "device engine socket")


@pytest.fixture(scope="session")
def test_registry() -> str:
    """HOST:PORT of an image registry that the build engine and the devices use (EDGE_BUILDER_TEST_REGISTRY)."""
    registry = _env_words("EDGE_BUILDER_TEST_REGISTRY")[0]
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with direct.open(f"http://{registry}/v2/", timeout=10) as response:
            status = response.status
    except (urllib.error.URLError, OSError) as exc:
        status = getattr(exc, "code", None) or exc
    if status != 200:
        _no_docker(f"registry {registry} does not answer GET /v2/ with 200: {status}")
    return registry


@pytest.fixture
def device_client(device_urls):
    """device_client(url, timeout=120) -> a docker-py client for a device (ssh:// or its socket),
    closed when the test ends."""
    clients = []

    def connect(url: str, timeout: float = 120):
        client = _device_client(url, timeout)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


class DeviceControl:
    """Stops, starts, pauses and resumes device engines by name or URL through .ci/devices.sh.

    stop: the engine's dockerd exits (SIGTERM; live-restore): calls in flight fail with a dropped
      connection within seconds, new calls fail at once; its containers live on and are there
      again after start, as on a device whose engine or network came back.
    pause: its dockerd is frozen (SIGSTOP): calls hang, nothing fails (docker-py's ssh client
      applies no timeout: bound waits yourself, as answers() does).
    Every device touched is started (and thawed) again when the test ends."""

    def __init__(self) -> None:
        self.touched: set[str] = set()

    def _run(self, command: str, device: str) -> None:
        name = device_name(device)
        self.touched.add(name)
        if command in ("stop", "pause"):
            # docker-py (ssh client) leaves one idle `ssh` per finished request in pools it no
            # longer references; close them while the engine answers, or each one whose ssh died
            # with the engine prints a BrokenPipeError when it is collected (at exit at the latest).
            gc.collect()
        proc = subprocess.run(["bash", str(DEVICES_SCRIPT), command, name],
                              capture_output=True, text=True, timeout=180)
        if proc.returncode != 0:
            pytest.fail(f".ci/devices.sh {command} {name} failed:\n{proc.stderr[-3000:]}", pytrace=False)

    def stop(self, device: str) -> None:
        self._run("stop", device)

    def start(self, device: str) -> None:
        self._run("start", device)

    def pause(self, device: str) -> None:
        self._run("pause", device)

    def resume(self, device: str) -> None:
        self._run("resume", device)

    @staticmethod
    def answers(url: str, seconds: float = DEVICE_ANSWER_SECONDS) -> str | None:
        """None if the engine at url answers within `seconds`, else why not (see device_answers)."""
        return device_answers(url, seconds)

    def restore(self) -> None:
        for name in sorted(self.touched):
            self._run("start", name)  # start also thaws a paused engine
        self.touched.clear()


@pytest.fixture
def device_control(device_urls):
    """A DeviceControl for fault tests; every device it touched answers again afterwards."""
    control = DeviceControl()
    try:
        yield control
    finally:
        control.restore()


# --- Skips in CI -------------------------------------------------------------
# In CI (CI=true) a skip hides a missing tool, engine or device; it fails instead, with its reason.

CI_HINT = "CI must have everything the tests use: ./setup.sh installs the packages, .ci/run the engines and devices"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _fail_skip(report) -> None:
    """Turn a skipped report into a failure that says what was missing."""
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    report.outcome = "failed"
    report.longrepr = f"skipped in CI (CI={os.environ['CI']}), which is a failure here: {reason}\n  {CI_HINT}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield  # a module-level skip (pytest.importorskip at import time) is a collect report
    if _in_ci() and report.skipped:
        _fail_skip(report)
    return report


# --- The step cache ----------------------------------------------------------
# A run through the CLI reuses steps from the step cache. Each module (its
# module-scoped runs) and each test gets its own, so no test sees another's
# steps and nothing reaches the user's own cache.

@pytest.fixture(scope="module", autouse=True)
def module_step_cache(tmp_path_factory):
    before = os.environ.get("EDGE_BUILDER_STEP_CACHE")
    os.environ["EDGE_BUILDER_STEP_CACHE"] = str(tmp_path_factory.mktemp("module-step-cache"))
    yield
    if before is None:
        os.environ.pop("EDGE_BUILDER_STEP_CACHE")
    else:
        os.environ["EDGE_BUILDER_STEP_CACHE"] = before


@pytest.fixture(autouse=True)
def own_step_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGE_BUILDER_STEP_CACHE", str(tmp_path_factory.mktemp("step-cache")))


# --- Real-world .tflite files ------------------------------------------------
# mediapipe 0.10.21's float models (no signature defs, fp16-stored or sparse weights).
# mediapipe needs numpy<2, so the wheel is downloaded, not installed.

MEDIAPIPE = "mediapipe==0.10.21"
MEDIAPIPE_MODELS = {  # name -> member of the wheel, under mediapipe/modules/
    "face_detection_short_range": "face_detection/face_detection_short_range.tflite",
    "pose_detection": "pose_detection/pose_detection.tflite",
    "selfie_segmentation": "selfie_segmentation/selfie_segmentation.tflite",
    "face_detection_full_range_sparse": "face_detection/face_detection_full_range_sparse.tflite",
}


@pytest.fixture(scope="session")
def mediapipe_models(request) -> dict[str, Path]:
    """The float models of the mediapipe wheel (downloaded once, kept in pytest's cache)."""
    cache = Path(request.config.cache.mkdir("mediapipe-0.10.21-models"))
    if not all((cache / f"{name}.tflite").exists() for name in MEDIAPIPE_MODELS):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.11", MEDIAPIPE, "-d", str(cache)], check=True, capture_output=True)
        wheel = next(cache.glob("mediapipe-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for name, member in MEDIAPIPE_MODELS.items():
                (cache / f"{name}.tflite").write_bytes(zf.read(f"mediapipe/modules/{member}"))
        wheel.unlink()
    return {name: cache / f"{name}.tflite" for name in MEDIAPIPE_MODELS}


# --- a real local run shared by a module's tests ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_x86_tflite_run(tmp_path_factory) -> Path:
    """The tiny-mobilenet test recipe run on x86-tflite by the local runner, through the CLI: its work dir."""
    from click.testing import CliRunner

    from builder.host.cli import cli

    out = tmp_path_factory.mktemp("out")
    recipe = Path(__file__).parent / "recipes" / "tiny-mobilenet.yaml"
    result = CliRunner().invoke(cli, ["run", str(recipe), "-t", "x86-tflite", "--runner", "local", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "tiny-mobilenet" / "x86-tflite"


def kill_after_steps(args: list[str], env: dict, count: int = 2) -> list[str]:
    """Run a `builder run` command and kill -9 its whole process group once `count` steps finished ok;
    return the ids of those steps."""
    import signal
    import subprocess

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    finished: list[str] = []
    try:
        for line in proc.stdout:
            if line.strip().startswith("< ") and " ok (" in line:
                finished.append(line.split()[1])
                if len(finished) == count:
                    break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return finished
