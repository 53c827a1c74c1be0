"""Where a device stage ran, as every benchmark and validation records it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Placement(BaseModel):
    """The device and engine a stage ran on, and whether its timings are the target's own.

    `emulated`: the image's platform is not the engine's (QEMU). `on_target`: the
    machine is of the target's platform and not emulated; a figure taken anywhere
    else (the x86 host standing in for an arm64 board) is not the target's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = "host"
    engine: str = "local"
    emulated: bool = False
    on_target: bool = True

    def args(self) -> list[str]:
        """The same, as `python -m builder.stage.execute` flags."""
        return ["--device", self.device, "--engine", self.engine] + (["--emulated"] if self.emulated else []) + (
            [] if self.on_target else ["--off-target"])
