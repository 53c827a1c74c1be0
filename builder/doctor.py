"""`builder doctor`: what this machine can do, and the fix for each problem found."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from builder import catalog
from builder.errors import ConfigError


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


def checks(ca_bundle: Path | None = None) -> list[Check]:
    from builder.docker_api import Engine
    from builder.image_build import PIP_ENV, PROXY_ENV, find_ca_bundle
    from builder.images import image_platform, resolve_base
    from builder.inputs import cache_dir

    out: list[Check] = []
    ok, why = Engine.available()
    out.append(Check("docker engine", ok, why, None if ok else "start Docker (see README: .ci/engine.sh), set DOCKER_HOST, "
                     "or use --runner local"))
    if ok:
        engine = Engine.connect()
        arm_ok, arm_why = engine.binfmt_arm64()
        out.append(Check("arm64 (rpi, jetson, arm-npu device images)", arm_ok, arm_why,
                         None if arm_ok else "apt-get install -y qemu-user-static binfmt-support"))
        nvidia = engine.has_runtime("nvidia")
        out.append(Check("NVIDIA container runtime (jetson)", True, "present" if nvidia else
                         "absent: jetson plans and renders here; run it against the Jetson's engine"))
        users: dict[tuple[str, str], list[str]] = {}
        runnable: set[tuple[str, str]] = set()  # bases of targets this engine can run
        for target in catalog.load_targets().values():
            for role in ("toolchain", "device"):
                spec = getattr(target.images, role)
                platform = image_platform(target, role, engine.platform)
                key = (resolve_base(spec.base, platform), platform)
                users.setdefault(key, []).append(f"{target.id} {role}")
                if nvidia or not target.requires.nvidia_runtime:
                    runnable.add(key)
        for (base, platform), who in users.items():
            present = engine.image_id(base) is not None
            needed = (base, platform) in runnable
            detail = ("present" if present else "not on the engine") + f"; used by {', '.join(who)}"
            if not present and not needed:
                detail += " (not needed here: it needs the NVIDIA runtime)"
            out.append(Check(f"base image {base} ({platform})", present or not needed, detail,
                             None if present or not needed else
                             "docker pull it, or map it to a local image with EDGE_BUILDER_BASE_IMAGES"))
    for folder in (cache_dir(), Path.cwd()):
        free = shutil.disk_usage(folder if folder.exists() else Path.home()).free / 2**30
        out.append(Check(f"free disk at {folder}", free > 15, f"{free:.0f} GiB free",
                         None if free > 15 else "images and wheelhouses need about 15 GiB"))
    proxies = {k: _redact(os.environ[k]) for k in PROXY_ENV if os.environ.get(k)}
    out.append(Check("proxy", True, ", ".join(f"{k}={v}" for k, v in proxies.items()) or "none set (direct)"))
    try:
        ca = find_ca_bundle(ca_bundle)
        out.append(Check("CA bundle", True, f"{ca} (passed to pip and downloads)" if ca else "none set: system trust store"))
    except ConfigError as exc:
        out.append(Check("CA bundle", False, exc.message, exc.hint))
    index = {k: _redact(os.environ[k]) for k in PIP_ENV if os.environ.get(k)}
    out.append(Check("pip index", True, ", ".join(f"{k}={v}" for k, v in index.items()) or "pip's own configuration"))
    return out
