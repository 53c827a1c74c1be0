"""`builder devices`: each device of the fleet, whether its engine answers, and what machine it is."""

from __future__ import annotations

import json
import time

from builder.errors import BuilderError
from builder.host import catalog, container_runtimes
from builder.host.devices import Device
from builder.host.docker_api import Engine
from builder.host.image_build import ImageBuilder

_PROBE = (
    "import json, shutil; from builder.stage import device_facts as f; "
    "print(json.dumps({**f.recorded_facts(), **f.thermal_state(), "
    "'free_disk_gb': round(shutil.disk_usage('/').free / 2**30, 1)}))"
)


def device_health(device: Device, images: ImageBuilder) -> dict:
    """Engine facts (always), and the machine's own facts read inside its device image when it has one."""
    health: dict = {"name": device.name, "engine": device.engine, "targets": list(device.targets or []),
                    "labels": device.labels, "jobs": device.jobs}
    try:
        engine = Engine.connect(device.engine, tls_files=device.tls_files)
        health |= {"answers": True, **engine.facts()}
        health |= {f"{name}_runtime": name in health["runtimes"] for name in container_runtimes.known()}
    except BuilderError as exc:
        return health | {"answers": False, "error": exc.message}
    for target_id in device.targets or []:
        image = images.render(catalog.load_target(target_id), "device", engine)
        if engine.image_id(image.tag):
            try:
                health["machine"] = json.loads(engine.exec_python(image.tag, _PROBE, platform=image.platform))
            except BuilderError as exc:
                health["machine"] = {"error": exc.message}
            break
    else:
        health["machine"] = {"note": "no device image here yet: a first run, or "
                                     "`builder build -t TARGET --device NAME`, makes it"}
    return health


def check_device(device: Device, images: ImageBuilder) -> list[dict]:
    """`builder devices --check`: per target of the device, what its device stage would miss there, with the
    fix: the engine, the container runtime it requires, the device image, then a tiny model through the image's
    runtime in a container run as a device stage's are (builder.stage.device_check)."""
    from builder.host.runners.docker import container_options, run_smoke

    checks: list[dict] = []
    try:
        engine = Engine.connect(device.engine, tls_files=device.tls_files)
        facts = engine.facts()
    except BuilderError as exc:
        return [{"device": device.name, "target": None, "ok": False, "what": "engine", "error": exc.message,
                 "hint": exc.hint}]
    for target_id in device.targets or []:
        target = catalog.load_target(target_id)
        row = {"device": device.name, "target": target_id}
        needed = target.requires.container_runtime
        runtime = container_runtimes.get(needed) if needed else None
        if runtime and runtime.name not in facts["runtimes"]:
            checks.append(row | {"ok": False, "what": runtime.label, "error": f"the engine has no {runtime.label}",
                                 "hint": runtime.install_fix()})
            continue
        image = images.render(target, "device", engine)
        if engine.image_id(image.tag) is None:
            checks.append(row | {"ok": False, "what": "device image", "error": f"{image.tag} is not on the engine",
                                 "hint": f"builder build -t {target_id} --device {device.name} (or a first run)"})
            continue
        info = {"tag": image.tag, "platform": image.platform}
        started = time.perf_counter()
        try:
            run_smoke(engine, info, target, "device")
            result = engine.run(image=image.tag, command=["python", "-m", "builder.stage.device_check", target.runtime,
                                                          *target.device_only],
                                platform=image.platform, network="none", **container_options(target, "device"))
            found = json.loads(result.log_tail[-1]) if result.log_tail else {}
        except (BuilderError, ValueError) as exc:
            found = {"ok": False, "error": getattr(exc, "message", str(exc)), "hint": getattr(exc, "hint", None)}
        row |= {"what": f"tiny model in {target.runtime}", "seconds": round(time.perf_counter() - started, 1),
                "emulated": image.platform != engine.platform, **found}
        if runtime:
            row["default_runtime"], _ = runtime.default_note(facts.get("default_runtime"))
        checks.append(row)
    return checks
