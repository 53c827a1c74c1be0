"""A device run cold and warm, side by side: where the time of `builder run ... --device` goes.

    .venv/bin/python bench/devices.py --device ssh://pi@raspberrypi [--recipe recipes/efficientnet-lite0.yaml]
                                      [-t rpi] [--out build/bench-devices]

Cold: the device image is first removed from the device's engine, so the run builds it
there (context and wheelhouse over the API). Warm: the same run again, every image
reused. Prints each run's fetch / toolchain / device-stage seconds and the warm/cold
ratio, and writes <out>/devices.json. The toolchain image is on the build engine both times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from builder.config.fleet import Fleet
from builder.host import catalog
from builder.host.devices import choose_devices
from builder.host.docker_api import Engine
from builder.host.images import render_image
from builder.host.matrix import run_matrix
from builder.host.runners.select import select_runner


def one_run(args, label: str) -> dict:
    runner = select_runner("docker", echo=lambda line: None)
    devices = choose_devices(Fleet(), [args.device])
    started = time.perf_counter()
    outcome = run_matrix([args.recipe], [args.target], runner, out=args.out / label, devices=devices,
                         echo=lambda line: None)[0]
    wall = time.perf_counter() - started
    manifest = json.loads((outcome.workdir / "manifest.json").read_text())
    timings = manifest["timings"]
    return {"run": label, "wall_s": round(wall, 1), "fetch_s": timings.get("fetch_s"),
            "toolchain_s": timings.get("toolchain_s"), "device_s": timings.get("device_s"),
            "device_image_built": manifest["images"]["device"]["built"],
            "device": manifest["stages"]["device"]["placement"]["device"],
            "emulated": manifest["stages"]["device"]["placement"]["emulated"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True, help="engine URL or context of the device")
    parser.add_argument("--recipe", type=Path, default=Path("recipes/efficientnet-lite0.yaml"))
    parser.add_argument("-t", "--target", default="rpi")
    parser.add_argument("--out", type=Path, default=Path("build/bench-devices"))
    args = parser.parse_args()
    engine = Engine.connect(args.device)
    image = render_image(catalog.load_target(args.target), "device", engine_platform=engine.platform)
    image_id = engine.image_id(image.tag)
    if image_id:  # cold: the device has neither the image nor its layers (all its tags go)
        engine.remove_image(image_id)
    rows = [one_run(args, "cold"), one_run(args, "warm")]
    keys = list(rows[0])
    print("  ".join(f"{k:>18}" for k in keys))
    for row in rows:
        print("  ".join(f"{str(row[k]):>18}" for k in keys))
    print(f"warm / cold wall time: {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "devices.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
