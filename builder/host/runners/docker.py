"""The docker runner: each stage in a container of its image, on the engine where it belongs.

The toolchain stage runs on the build engine. The device stage runs on the
device's engine (ssh://, tcp://, a context), with its image built there natively
or pulled from the registry; without a device, on the build engine (QEMU for
another platform, marked emulated). The work directory goes into the container
through the Docker API and comes back out the same way (no bind mounts), so a
remote engine works the same. Containers run without a network: everything
they need was fetched on the host.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from builder.config.target import Target
from builder.errors import DeviceError, EngineError, EngineUnreachable, GpuUnavailable, StageDied
from builder.host import container_runtimes
from builder.host.devices import HOST, Device
from builder.host.docker_api import Attempt, Engine, display_url
from builder.host.image_build import ImageBuilder
from builder.host.step_cache import StageIdentity
from builder.placement import Placement
from builder.plan import Plan
from builder.stage.execute import STEPS_FAILED, finished_step, step_files

USER = "1000:1000"  # images.UID: the steps never run as root


def container_options(target: Target, stage: str) -> dict:
    """How a stage's containers run: a device stage with the container runtime, the groups (those that own a
    GPU's device nodes) and the environment the target requires."""
    if stage != "device":
        return {"user": USER, "runtime": None, "group_add": None, "env": {}}
    return {"user": USER, "runtime": target.requires.container_runtime,
            "group_add": list(target.requires.groups) or None, "env": dict(target.requires.environment)}


def run_smoke(engine: Engine, image: dict, target: Target, stage: str) -> None:
    """Import the image's `run_smoke` modules in a container run as the stage's are (what an image build
    cannot test: a library that a container runtime mounts only into running containers)."""
    modules = getattr(target.images, stage).run_smoke
    if not modules:
        return
    result = engine.run(image=image["tag"], command=["python", "-m", "builder.stage.smoke", *modules],
                        platform=image["platform"], network="none", **container_options(target, stage))
    if result.exit_code != 0:
        raise GpuUnavailable(f"the {stage} image of {target.id} cannot import {', '.join(modules)} when it runs "
                             f"on {display_url(engine.url)}", log_tail=result.log_tail,
                             hint=container_runtimes.smoke_hint(target.requires.container_runtime))


class DockerRunner:
    name = "docker"

    def __init__(self, engine: Engine, *, ca_bundle: Path | None = None, rebuild: bool = False,
                 install_from: str = "wheelhouse", registry: str | None = None, verbose: bool = False, echo=print):
        self.engine = engine
        self.verbose = verbose  # the tools' own output on the console too
        self.images = ImageBuilder(ca_bundle=ca_bundle, rebuild=rebuild, install_from=install_from,
                                   registry=registry, echo=echo)
        self._engines: dict[str, Engine] = {}
        self._smoked: set[tuple[str, str]] = set()  # (engine, image) whose run_smoke passed
        self._abandoned: dict[str, list[str]] = {}  # device -> containers of its given-up attempts
        self._lock = threading.Lock()

    def engine_of(self, device: Device) -> Engine:
        if device.is_host:
            return self.engine
        with self._lock:
            engine = self._engines.get(device.name)
        if engine is None:  # connected outside the lock: a frozen device holds up only its own jobs
            engine = Engine.connect(device.engine, tls_files=device.tls_files)
            with self._lock:
                engine = self._engines.setdefault(device.name, engine)
        return engine

    def probe(self, device: Device) -> bool:
        """Whether a device marked down answers again (a new connection, with a deadline); if so, the
        containers of its given-up attempts are removed and its jobs use the new connection."""
        try:
            engine = Engine.connect(device.engine, tls_files=device.tls_files)
        except EngineError:
            return False
        with self._lock:
            self._engines[device.name] = engine
            abandoned = self._abandoned.pop(device.name, [])
        for cid in abandoned:
            engine.remove_container(cid)
        return True

    def check(self, plan: Plan, engine: Engine, device: Device) -> None:
        """Stop early, with the fix, when `engine` cannot run the target's device stage."""
        target = plan.target
        if target.platform != engine.platform:
            ok, why = engine.binfmt_arm64()
            if not ok:
                raise EngineError(f"target {target.id} runs on {target.platform}, but the engine at "
                                  f"{display_url(engine.url)} cannot: {why}")
        needed = target.requires.container_runtime
        if needed and not engine.has_runtime(needed):
            runtime = container_runtimes.get(needed)
            if device.is_host:
                raise DeviceError(f"target {target.id} needs a device: the build engine has no {runtime.label}",
                                  cause="device-needed", hint=target.requires.note)
            raise EngineError(f"device {device.name}: its engine at {display_url(engine.url)} has no {runtime.label}",
                              hint=runtime.install_fix("there"))

    def identity(self, plan: Plan, stage: str, device: Device = HOST) -> StageIdentity:
        """The stage's image (by content-hash tag, so nothing is built to know it) and placement."""
        engine = self.engine if stage == "toolchain" else self.engine_of(device)
        image = self.images.render(plan.target, stage, engine)
        return StageIdentity(image.tag, self._placement(plan, engine, device, image.platform).model_dump(), image.tag,
                             machine=engine.machine())

    @staticmethod
    def _placement(plan: Plan, engine: Engine, device: Device, image_platform: str) -> Placement:
        emulated = image_platform != engine.platform
        return Placement(device=device.name, engine=display_url(engine.url), emulated=emulated,
                         on_target=not emulated and image_platform == plan.target.platform)

    def run_stage(self, plan: Plan, workdir: Path, stage: str, echo, device: Device = HOST, on_step=None) -> dict:
        """Run one stage's steps in a container; return its image and placement for the manifest.
        `on_step(step_id, folder)` is called as each step finishes, with its files copied out into `folder`."""
        if not plan.stage_steps(stage):
            return {}
        engine = self.engine if stage == "toolchain" else self.engine_of(device)
        calls = {call.id: call for call in plan.stage_steps(stage)}

        def step_done(attempt: Attempt, line: str) -> None:
            """A step that finished in the running container: its files out now, for the step cache."""
            step = finished_step(line)
            if not (on_step and step in calls and attempt.containers):
                return
            with tempfile.TemporaryDirectory(prefix=".step-", dir=workdir) as tmp:  # goes with a killed run
                try:
                    engine.copy_paths(attempt.containers[-1], "/work", step_files(calls[step]), Path(tmp))
                except EngineError as exc:
                    echo(f"  warning: {step} is kept in the step cache at the end of the stage only: {exc.message}")
                    return
                with attempt.landing():  # a given-up attempt keeps nothing
                    on_step(step, Path(tmp))

        def image_and_container(attempt: Attempt) -> dict:
            if stage == "device":
                self.check(plan, engine, device)
            image = self.images.ensure_role(engine, plan.target, stage)
            if (engine.url, image["tag"]) not in self._smoked:
                run_smoke(engine, image, plan.target, stage)
                self._smoked.add((engine.url, image["tag"]))
            placement = self._placement(plan, engine, device, image["platform"])
            command = ["python", "-m", "builder.stage.execute", "/work", "--stage", stage, *placement.args(),
                       *(["--verbose"] if self.verbose else [])]
            started = time.perf_counter()
            result = engine.run(
                image=image["tag"], command=command, workdir_in=workdir,
                platform=image["platform"], network="none", **container_options(plan.target, stage),
                on_log=lambda line: (step_done(attempt, line), echo(f"  {line}")),
                labels={"dev.edge-builder.recipe": plan.recipe.name, "dev.edge-builder.target": plan.target.id},
                attempt=attempt,
            )
            if result.exit_code not in (0, STEPS_FAILED):
                raise StageDied(f"the {stage} container of {plan.target.id} exited with {result.exit_code} after "
                                f"{time.perf_counter() - started:.0f} s", log_tail=result.log_tail,
                                hint="exit 137 is usually the engine's memory limit; see the log above")
            return {"image": image, "placement": placement.model_dump()}

        # a device can hang (frozen, cut off) rather than fail: its engine is watched
        attempt = Attempt()
        if device.is_host:
            return image_and_container(attempt)
        try:
            return engine.watched(image_and_container, attempt=attempt)
        except EngineUnreachable:  # the device is down: a new connection when it is back, its containers removed
            self.abandon(device, attempt.containers)
            raise

    def abandon(self, device: Device, containers: list[str]) -> None:
        """`device` is down: its next job connects anew, and `containers` (of its given-up attempt) are
        removed once it answers again (probe)."""
        with self._lock:
            self._engines.pop(device.name, None)
            self._abandoned.setdefault(device.name, []).extend(containers)
