"""A target requires a container runtime by name (`requires.container_runtime`); the backend that knows one
contributes its fixes, and one no backend describes still works by its name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from builder.config.target import Requires, Target
from builder.errors import DeviceError, EngineError
from builder.host import catalog, container_runtimes
from builder.host.devices import HOST, Device
from builder.host.runners.docker import DockerRunner, container_options


def with_runtime(name: str | None) -> Target:
    target = catalog.load_target("x86-tflite")
    return target.model_copy(update={"requires": Requires(container_runtime=name)})


def test_a_target_written_with_the_old_flag_still_loads_and_asks_for_that_runtime(tmp_path):
    jetson = catalog.load_target("jetson")
    old = jetson.model_dump(mode="json")
    old["requires"] = {"nvidia_runtime": True, "groups": ["video"]}
    assert Target.model_validate(old).requires == Requires(container_runtime="nvidia", groups=["video"])
    old["requires"] = {"nvidia_runtime": False}
    assert Target.model_validate(old).requires.container_runtime is None
    (tmp_path / "jetson.yaml").write_text(yaml.safe_dump({**old, "requires": {"nvidia_runtime": True}}))
    assert catalog.load_target(tmp_path / "jetson.yaml").requires.container_runtime == "nvidia"


def test_the_backend_that_knows_a_runtime_contributes_its_fixes():
    nvidia = container_runtimes.get("nvidia")
    assert nvidia in container_runtimes.known().values()
    assert nvidia.title == "NVIDIA container runtime"
    assert nvidia.install_fix("here").startswith("install the NVIDIA container toolkit here")
    note, fix = nvidia.default_note("runc")
    assert "TensorRT" in note and fix.startswith("sudo nvidia-ctk runtime configure")
    assert nvidia.default_note("nvidia") == ("default runtime nvidia", None)


def test_a_runtime_no_backend_describes_is_required_and_checked_by_its_name():
    gvisor = with_runtime("runsc")
    assert container_options(gvisor, "device")["runtime"] == "runsc"
    assert container_options(gvisor, "toolchain")["runtime"] is None
    runsc = container_runtimes.get("runsc")
    assert (runsc.title, runsc.install_fix("there")) == (
        "runsc container runtime", "install the runsc OCI runtime there and restart Docker")
    engine = SimpleNamespace(platform=gvisor.platform, url="tcp://device:2376", has_runtime=lambda name: False)
    plan = SimpleNamespace(target=gvisor)
    with pytest.raises(DeviceError, match="needs a device: the build engine has no runsc runtime"):
        DockerRunner.check(None, plan, engine, HOST)
    with pytest.raises(EngineError, match="has no runsc runtime") as caught:
        DockerRunner.check(None, plan, engine, Device(name="board", engine="tcp://device:2376", targets=["x86-tflite"]))
    assert caught.value.hint == "install the runsc OCI runtime there and restart Docker"
    offered = SimpleNamespace(platform=gvisor.platform, url="tcp://device:2376", has_runtime=lambda name: name == "runsc")
    DockerRunner.check(None, plan, offered, HOST)


def test_a_smoke_failure_names_the_targets_runtime_else_every_described_one():
    assert container_runtimes.smoke_hint("runsc") == "run the container with the runsc runtime (--runtime runsc)"
    assert "--runtime nvidia" in container_runtimes.smoke_hint(None)
