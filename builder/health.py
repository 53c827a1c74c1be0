"""`builder devices`: each device of the fleet, whether its engine answers, and what machine it is."""

from __future__ import annotations

import json

from builder import catalog
from builder.devices import Device
from builder.docker_api import Engine
from builder.errors import BuilderError
from builder.image_build import ImageBuilder

_PROBE = (
    "import json, shutil; from builder import device_facts as f; "
    "print(json.dumps({**f.machine_facts(), **f.thermal_state(), "
    "'free_disk_gb': round(shutil.disk_usage('/').free / 2**30, 1)}))"
)


def device_health(device: Device, images: ImageBuilder) -> dict:
    """Engine facts (always), and the machine's own facts read inside its device image when it has one."""
    health: dict = {"name": device.name, "engine": device.engine, "targets": list(device.targets or []),
                    "labels": device.labels, "jobs": device.jobs}
    try:
        engine = Engine.connect(device.engine, tls_files=device.tls_files)
        health |= {"answers": True, **engine.facts()}
        health["nvidia_runtime"] = "nvidia" in health["runtimes"]
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
