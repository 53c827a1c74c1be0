"""Dockerfile rendering and image identity.

An image's tag is a content hash of everything that goes into it: the rendered
Dockerfile, the lock file, the project's step code and the resolved base image.
Targets whose images render identically share one image. Build-time secrets
(CA bundle, proxies) and the wheelhouse are not part of the identity: they
change how packages are obtained, not what is installed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import yaml

from builder import plugins
from builder.config.target import ImageSpec, Target
from builder.errors import ConfigError
from builder.host import catalog, locks

UID = 1000
CODE_SUFFIXES = (".py",)


@dataclass
class RenderedImage:
    role: str                      # "toolchain" or "device"
    spec: ImageSpec
    platform: str
    base: str                      # after the base-image map
    dockerfile: str
    context: dict[str, bytes] = field(default_factory=dict)  # what the hash covers

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.context):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.context[name]).digest())
        digest.update(self.platform.encode())
        return digest.hexdigest()

    @property
    def repository(self) -> str:
        return f"edge-builder/{self.spec.lock}"

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.content_hash[:16]}"


def base_image_map() -> dict:
    """EDGE_BUILDER_BASE_IMAGES names a YAML file: {image: local-image} or {image: {platform: local-image}}."""
    path = os.environ.get("EDGE_BUILDER_BASE_IMAGES")
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"EDGE_BUILDER_BASE_IMAGES={path}: cannot read: {exc}",
                          hint="point it at a YAML mapping of base image -> local image") from None
    if not isinstance(data, dict):
        raise ConfigError(f"EDGE_BUILDER_BASE_IMAGES={path}: expected a mapping of image -> image")
    for image, mapped in data.items():
        if not (isinstance(mapped, str) or isinstance(mapped, dict) and all(isinstance(m, str) for m in mapped.values())):
            raise ConfigError(f"EDGE_BUILDER_BASE_IMAGES={path}: {image}: expected an image name or {{platform: image}}",
                              hint="e.g. `python:3.11-slim-bookworm: {linux/arm64: my/base:arm64}`")
    return data


def resolve_base(image: str, platform: str) -> str:
    """Apply the base-image map, then a registry mirror (EDGE_BUILDER_REGISTRY_MIRROR) to a FROM image."""
    mapped = base_image_map().get(image)
    if isinstance(mapped, dict):
        mapped = mapped.get(platform)
    if mapped:
        return mapped
    mirror = os.environ.get("EDGE_BUILDER_REGISTRY_MIRROR")
    if mirror:
        first = image.split("/")[0]
        has_registry = "/" in image and ("." in first or ":" in first or first == "localhost")
        if not has_registry:
            return f"{mirror.rstrip('/')}/{image if '/' in image else 'library/' + image}"
    return image


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(catalog.data_dirs("dockerfiles")),  # a backend's templates and partials too
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - Dockerfiles, not HTML
    )


def code_files() -> dict[str, bytes]:
    """The project's stage code as it goes into images (sorted, .py only), and the installed plugins'
    under plugins/. The host's side stays out: an edit to it rebuilds no image and keeps every cached step."""
    package = Path(__file__).resolve().parents[1]  # builder/
    own = {f"builder/{rel}": path.read_bytes() for path in sorted(package.rglob("*.py"))
           if "__pycache__" not in path.parts and not _host_side(rel := path.relative_to(package).as_posix())}
    return own | {f"plugins/{rel}": data for rel, data in plugins.code_files().items()}


def _host_side(module: str) -> bool:
    """builder/host/, the `python -m builder.cli` shim and each backend's host.py (paths relative to builder/)."""
    parts = module.split("/")
    return parts[0] == "host" or module == "cli.py" or (parts[0] == "backends" and parts[-1] == "host.py")


def image_platform(target: Target, role: str, engine_platform: str) -> str:
    """The spec's platform, else the engine's for the toolchain and the target's for the device image."""
    spec: ImageSpec = getattr(target.images, role)
    return spec.platform or (engine_platform if role == "toolchain" else target.platform)


def render_image(target: Target, role: str, *, engine_platform: str = "linux/amd64", install_platform: str | None = None,
                 wheelhouse: bool = True, ca_bundle: bool = False) -> RenderedImage:
    """`install_platform`: where the install stage runs (default: the engine's platform)."""
    spec: ImageSpec = getattr(target.images, role)
    platform = image_platform(target, role, engine_platform)
    install_platform = install_platform or engine_platform
    lock = locks.lock_file(spec.lock)
    if not lock.exists():
        raise ConfigError(f"target {target.id}: images.{role}.lock: {lock} does not exist",
                          hint="create it with `builder lock`")
    base = resolve_base(spec.base, platform)
    code = code_files()
    try:
        dockerfile = _environment().get_template(spec.template).render(
            base=base, platform=platform, role=role, lock=spec.lock, apt=spec.apt, smoke=spec.smoke, uid=UID,
            wheelhouse=wheelhouse, ca_bundle=ca_bundle, install_platform=install_platform,
            install_base=resolve_base(spec.base, install_platform), pip_platform=locks.platform_args(spec.lock),
            python=locks.python_of(spec.lock), system_site_packages=spec.system_site_packages,
            base_provides=[p.model_dump() for p in spec.base_provides],
            plugins=any(path.startswith("plugins/") for path in code),
        )
    except jinja2.TemplateNotFound:
        raise ConfigError(f"target {target.id}: images.{role}.template: "
                          f"no {spec.template} in {', '.join(map(str, catalog.data_dirs('dockerfiles')))}") from None
    except jinja2.TemplateError as exc:
        raise ConfigError(f"target {target.id}: images.{role}.template: {spec.template}: {exc.message}",
                          hint="a template may use only the values its target declares") from None
    context = {"Dockerfile": dockerfile.encode(), "lock.txt": lock.read_bytes(), **code}
    return RenderedImage(role=role, spec=spec, platform=platform, base=base, dockerfile=dockerfile, context=context)


def render_target(target: Target, **kwargs) -> dict[str, RenderedImage]:
    return {role: render_image(target, role, **kwargs) for role in ("toolchain", "device")}
