"""The docker runner: build (or reuse) the target's images, run each stage in a container.

The work directory goes into the container through the Docker API and comes
back out the same way (no bind mounts), so a remote engine works the same:
that is how a benchmark runs on the real device (DOCKER_HOST=ssh://pi@rpi).
Containers run without a network: everything they need was fetched on the host.
"""

from __future__ import annotations

import time
from pathlib import Path

from builder.docker_api import Engine
from builder.errors import EngineError, StepError
from builder.execute import read_records
from builder.image_build import ImageBuilder
from builder.plan import Plan


class DockerRunner:
    name = "docker"

    def __init__(self, engine: Engine, *, ca_bundle: Path | None = None, rebuild: bool = False,
                 install_from: str = "wheelhouse", echo=print):
        self.engine = engine
        self.images = ImageBuilder(engine, ca_bundle=ca_bundle, rebuild=rebuild, install_from=install_from, echo=echo)
        self.built: dict[str, dict] = {}

    def emulated(self, platform: str) -> bool:
        return platform != self.engine.platform

    def check(self, plan: Plan) -> None:
        """Stop early, with the fix, when this engine cannot run the target's device stage."""
        target = plan.target
        if self.emulated(target.platform):
            ok, why = self.engine.binfmt_arm64()
            if not ok:
                raise EngineError(f"target {target.id} runs on {target.platform}, but this engine cannot: {why}")
        if target.requires.nvidia_runtime and not self.engine.has_runtime("nvidia"):
            raise EngineError(
                f"target {target.id} needs the NVIDIA container runtime, which the engine at {self.engine.url} lacks",
                hint=(target.requires.note or "run against the device's own engine") +
                "; `builder plan` and `builder render` work without it",
            )

    def prepare(self, plan: Plan, echo) -> dict:
        self.check(plan)
        self.built = self.images.ensure_target(plan.target, self.engine.platform)
        return self.built

    def run_stage(self, plan: Plan, workdir: Path, stage: str, echo) -> list[dict]:
        if not plan.stage_steps(stage):
            return []
        image = self.built[stage]
        emulated = self.emulated(image["platform"])
        command = ["python", "-m", "builder.execute", "/work", "--stage", stage] + (["--emulated"] if emulated else [])
        started = time.perf_counter()
        result = self.engine.run(
            image=image["tag"], command=command, workdir_in=workdir, user="1000:1000", platform=image["platform"],
            network="none", on_log=lambda line: echo(f"  {line}"),
            labels={"dev.edge-builder.recipe": plan.recipe.name, "dev.edge-builder.target": plan.target.id},
        )
        if result.exit_code not in (0, 1):  # 1 = some step failed and said so in its record
            raise StepError(f"the {stage} container of {plan.target.id} exited with {result.exit_code} after "
                            f"{time.perf_counter() - started:.0f} s", log_tail=result.log_tail,
                            hint="exit 137 is usually the engine's memory limit; see the log above")
        return [r for r in read_records(workdir).values() if r["stage"] == stage]
