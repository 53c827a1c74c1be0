"""builder.host.devices and builder.config.fleet: the fleet file, --device values, and the pool that places stages."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from builder.config.fleet import Fleet
from builder.errors import ConfigError, DeviceError
from builder.host.devices import HOST, Device, DevicePool, HostLock, choose_devices, load_fleet

FLEET = """\
registry: 127.0.0.1:5055/edge-builder
devices:
  - name: pi-a
    targets: [rpi]
    engine: ssh://pi@pi-a.local
    labels: {board: Raspberry Pi 5}
  - name: pi-b
    targets: [rpi, arm-npu]
    engine: pi-b-context
    jobs: 2
"""


def write(tmp_path, text: str):
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_a_fleet_file_loads_with_its_registry_and_devices(tmp_path):
    fleet = load_fleet(write(tmp_path, FLEET))
    assert fleet.registry == "127.0.0.1:5055/edge-builder"
    devices = choose_devices(fleet, [])
    assert [(d.name, d.engine, d.targets, d.jobs) for d in devices] == [
        ("pi-a", "ssh://pi@pi-a.local", ("rpi",), 1), ("pi-b", "pi-b-context", ("rpi", "arm-npu"), 2)]
    assert devices[0].labels == {"board": "Raspberry Pi 5"}


def test_the_fleet_comes_from_the_environment_too(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_BUILDER_FLEET", str(write(tmp_path, FLEET)))
    assert len(load_fleet(None).devices) == 2
    monkeypatch.delenv("EDGE_BUILDER_FLEET")
    assert load_fleet(None) == Fleet()


@pytest.mark.parametrize(("text", "expected"), [
    (FLEET.replace("jobs: 2", "jobs: 0"), "fleet.yaml:10: devices[1].jobs: Input should be greater than or equal to 1"),
    (FLEET.replace("name: pi-b", "name: pi-a"), "device name(s) used twice: pi-a"),
    (FLEET.replace("ssh://pi@", "ftp://pi@"), "use ssh://, tcp://, unix:// or a Docker context name"),
    (FLEET.replace("127.0.0.1:5055/edge-builder", "https://reg/x"), "expected HOST[:PORT]/REPO"),
    (FLEET.replace("    jobs: 2", f"    tls: {{ca_cert: {__file__}, client_cert: {__file__}, client_key: {__file__}}}"),
     "client certificates apply to a tcp:// engine only"),
    (FLEET.replace("    jobs: 2", "    tls: {ca_cert: /nope/ca.pem, client_cert: c, client_key: k}"),
     "devices[1].tls.ca_cert: Path does not point to a file"),
    (FLEET.replace("    targets: [rpi]\n", ""), "devices[0].targets: Field required"),
    (FLEET.replace("labels:", "label:"), "devices[0].label: Extra inputs are not permitted"),
])
def test_fleet_mistakes_name_the_file_and_field(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_fleet(write(tmp_path, text))
    assert expected in err.value.message
    assert err.value.exit_code == 2


def test_a_missing_fleet_file_is_a_usage_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_fleet(tmp_path / "nope.yaml")


def test_device_values_are_fleet_names_or_engine_urls(tmp_path):
    fleet = load_fleet(write(tmp_path, FLEET))
    assert [d.name for d in choose_devices(fleet, ["pi-b"])] == ["pi-b"]
    ad_hoc = choose_devices(fleet, ["ssh://pi:secret@rpi5.lab:2222"])[0]
    assert (ad_hoc.name, ad_hoc.targets) == ("rpi5.lab", None)  # serves every target of the run
    assert choose_devices(Fleet(), ["my-context"])[0].engine == "my-context"  # no fleet: a context name
    with pytest.raises(ConfigError, match="no such device in the fleet"):
        choose_devices(fleet, ["pi-c"])


def test_the_fleet_schema_is_printed_for_editors():
    proc = subprocess.run([sys.executable, "-m", "builder.host.cli", "schema", "fleet"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert {"registry", "devices"} <= set(schema["properties"])
    assert "jobs" in schema["$defs"]["DeviceSpec"]["properties"]


# --- the pool ---------------------------------------------------------------------------------------

def hold(pool: DevicePool, target: str, seconds: float, seen: list, lock: threading.Lock) -> None:
    with pool.device(target) as device:
        with lock:
            seen.append(("start", device.name, time.monotonic()))
        time.sleep(seconds)
        with lock:
            seen.append(("end", device.name, time.monotonic()))


def run_threads(*targets) -> None:
    threads = [threading.Thread(target=t) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


def test_device_stages_spread_over_the_free_devices_and_each_takes_its_device_alone():
    a, b = Device("a", "ssh://a", ("rpi",)), Device("b", "ssh://b", ("rpi",))
    pool = DevicePool([a, b], echo=lambda line: None)
    seen: list = []
    lock = threading.Lock()
    run_threads(*[lambda: hold(pool, "rpi", 0.2, seen, lock)] * 4)
    starts = [name for kind, name, _ in seen if kind == "start"]
    assert sorted(starts) == ["a", "a", "b", "b"]
    for name in "ab":  # never two stages on one device at once
        events = [(kind, t) for kind, n, t in sorted(seen, key=lambda e: e[2]) if n == name]
        assert [k for k, _ in events] == ["start", "end", "start", "end"]


def test_a_target_without_devices_runs_on_the_host_alone():
    pool = DevicePool([Device("a", "ssh://a", ("rpi",))], echo=lambda line: None)
    with pool.device("x86-tflite") as device:
        assert device is HOST


def test_a_host_device_stage_waits_for_conversions_and_blocks_new_ones():
    host = HostLock()
    order: list[str] = []
    reading = threading.Event()

    def conversion(name, seconds):
        with host.shared():
            order.append(f"{name} start")
            reading.set()
            time.sleep(seconds)
            order.append(f"{name} end")

    def benchmark():
        reading.wait(5)
        with host.exclusive():
            order.append("bench start")
            time.sleep(0.1)
            order.append("bench end")

    first = threading.Thread(target=conversion, args=("c1", 0.3))
    bench = threading.Thread(target=benchmark)
    first.start()
    bench.start()
    time.sleep(0.1)
    second = threading.Thread(target=conversion, args=("c2", 0.05))  # arrives while the benchmark waits
    second.start()
    for t in (first, bench, second):
        t.join(5)
    assert order == ["c1 start", "c1 end", "bench start", "bench end", "c2 start", "c2 end"]


def test_a_device_marked_down_hands_its_jobs_to_the_other_and_none_left_is_classified():
    a, b = Device("a", "ssh://a", ("rpi",)), Device("b", "ssh://b", ("rpi",))
    pool = DevicePool([a, b], echo=lambda line: None)
    pool.mark_down(a, "connection refused")
    with pool.device("rpi") as device:
        assert device is b
    pool.mark_down(b, "timed out")
    with pytest.raises(DeviceError) as err:
        with pool.device("rpi"):
            pass
    assert err.value.cause == "device-unavailable"
    assert "a: connection refused" in err.value.message and "b: timed out" in err.value.message


def test_a_waiting_job_is_failed_when_the_last_busy_device_goes_down():
    a = Device("a", "ssh://a", ("rpi",))
    pool = DevicePool([a], echo=lambda line: None)
    errors: list = []

    def waiter():
        try:
            with pool.device("rpi"):
                pass
        except DeviceError as exc:
            errors.append(exc.cause)

    with pool.device("rpi"):
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.1)
        pool.mark_down(a, "engine stopped")
    t.join(5)
    assert errors == ["device-unavailable"]
