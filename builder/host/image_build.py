"""Build a target's images once: reuse by content-hash tag, stream readable progress.

Packages reach an image one of two ways (`install_from`):
- "wheelhouse" (default): the host downloads the locked wheels with its own pip
  configuration (index mirrors, CA bundle, find-links) and the image installs
  them with no network at all. This is the offline / air-gapped build, and it
  makes rebuilds fast.
- "index": pip inside the build talks to the index. The CA bundle is copied
  into the install stage only (the final image copies /opt/venv and nothing
  else, so the CA never reaches a published layer); PIP_INDEX_URL,
  PIP_EXTRA_INDEX_URL and PIP_TRUSTED_HOST pass as build args; proxies pass as
  Docker's predefined proxy args, which the classic builder keeps out of the
  image history.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path

from builder.config.target import Target
from builder.errors import BuildError, ConfigError
from builder.host import images, locks
from builder.host.docker_api import Engine, display_url
from builder.host.inputs import cache_dir

CA_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT")
PIP_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST")
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def find_ca_bundle(explicit: Path | None) -> Path | None:
    """--ca-bundle, else the first of SSL_CERT_FILE, REQUESTS_CA_BUNDLE, PIP_CERT; checked to be PEM."""
    if explicit is not None:
        path, origin = explicit, "--ca-bundle"
    else:
        origin = next((name for name in CA_ENV if os.environ.get(name)), None)
        if origin is None:
            return None
        path = Path(os.environ[origin])
    if not path.is_file():
        raise ConfigError(f"{origin}: CA bundle {path} does not exist", hint="give the path of a PEM file of CA certificates")
    if b"BEGIN CERTIFICATE" not in path.read_bytes()[:1 << 20]:
        raise ConfigError(f"{origin}: {path} holds no PEM certificate", hint="give a PEM bundle (-----BEGIN CERTIFICATE-----)")
    return path


class ImageBuilder:
    """Makes sure an engine has an image: already there, pulled from the registry, or built there.

    Each image is built on the engine that runs it, natively where the engine's
    platform is the image's (a device builds its own device image). With a
    registry, an image built once is pushed by its content-hash tag and pulled
    by every other engine that lacks it.
    """

    def __init__(self, *, ca_bundle: Path | None = None, rebuild: bool = False, install_from: str = "wheelhouse",
                 registry: str | None = None, echo=print):
        self.ca_bundle = find_ca_bundle(ca_bundle)
        self.rebuild = rebuild
        self.install_from = install_from
        self.registry = registry
        self.echo = echo
        self._done: dict[tuple[str, str], dict] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)

    def render(self, target: Target, role: str, engine: Engine) -> images.RenderedImage:
        return images.render_image(target, role, engine_platform=engine.platform,
                                   install_platform=self.install_platform(engine, target, role),
                                   wheelhouse=self.install_from == "wheelhouse",
                                   ca_bundle=self.install_from == "index" and self.ca_bundle is not None)

    @staticmethod
    def install_platform(engine: Engine, target: Target, role: str) -> str:
        """Where the install stage runs: the engine's own platform (a cross-install for another platform's
        image, minutes faster than emulation), unless the engine holds only the image's own platform's base
        image (a device engine loaded with its target's base), where it installs as on that platform."""
        platform = images.image_platform(target, role, engine.platform)
        base = getattr(target.images, role).base
        if platform == engine.platform or engine.image_id(images.resolve_base(base, engine.platform)):
            return engine.platform
        return platform if engine.image_id(images.resolve_base(base, platform)) else engine.platform

    def ensure_role(self, engine: Engine, target: Target, role: str) -> dict:
        return self.ensure(engine, self.render(target, role, engine))

    def registry_ref(self, image: images.RenderedImage) -> str | None:
        return f"{self.registry}/{image.tag.split('/', 1)[-1]}" if self.registry else None

    def ensure(self, engine: Engine, image: images.RenderedImage) -> dict:
        """The image's tag and id on `engine`, building it only when no image has its content hash (or --rebuild)."""
        key = (engine.url, image.tag)
        with self._locks[key]:  # two jobs of one target on one engine: one build
            if key not in self._done:
                self._done[key] = self._ensure(engine, image)
            return self._done[key]

    def _ensure(self, engine: Engine, image: images.RenderedImage) -> dict:
        info = {"tag": image.tag, "platform": image.platform, "base": image.base, "lock": image.spec.lock,
                "engine": display_url(engine.url)}
        ref = self.registry_ref(image)
        existing = None if self.rebuild else engine.image_id(image.tag)
        if existing:
            self.echo(f"image up to date: {image.tag}")
            info |= {"id": existing, "built": False}
        elif ref and not self.rebuild and engine.pull(ref, image.platform):
            engine.tag(ref, image.tag)
            self.echo(f"image pulled from {ref}")
            info |= {"id": engine.image_id(image.tag), "built": False, "pulled": ref}
        else:
            info |= {"id": self._build(engine, image), "built": True}
            if ref:
                self.echo(f"pushing {ref}")
                engine.tag(image.tag, ref)
                engine.push(ref)
                info["pushed"] = ref
        info["digest"] = engine.repo_digest(ref or image.tag)
        return info

    def context(self, image: images.RenderedImage) -> dict[str, bytes | Path]:
        """The build context: rendered files, plus the wheelhouse (or the CA bundle for index installs)."""
        context: dict[str, bytes | Path] = dict(image.context)
        if self.install_from == "wheelhouse":
            self.echo(f"  wheelhouse for {image.spec.lock}: downloading locked wheels on the host (cached)")
            folder = locks.wheelhouse(image.spec.lock, cache_dir())
            context |= {f"wheels/{p.name}": p for p in sorted(folder.glob("*.whl"))}
        elif self.ca_bundle is not None:
            context["ca-bundle.pem"] = self.ca_bundle
        return context

    def _build(self, engine: Engine, image: images.RenderedImage) -> str:
        started = time.perf_counter()
        self.echo(f"building {image.tag} ({image.role}, {image.platform}, from {image.base}) "
                  f"on {display_url(engine.url)}")
        buildargs = {k: os.environ[k] for k in PROXY_ENV if os.environ.get(k)}
        if self.install_from == "index":
            buildargs |= {k: os.environ[k] for k in PIP_ENV if os.environ.get(k)}

        def progress(line: str) -> None:
            if line.startswith("Step ") or "Successfully installed" in line or "ERROR" in line or "smoke" in line:
                self.echo(f"  [{time.perf_counter() - started:6.1f}s] {line.strip()[:160]}")

        try:
            # No build platform: every FROM names its own (the install stage runs natively,
            # the final stage is the image's platform), and a build-wide one would make the
            # classic builder refuse COPY --from a stage of another platform.
            image_id = engine.build(context=self.context(image), tag=image.tag, buildargs=buildargs,
                                         on_log=progress,
                                         labels={"dev.edge-builder.content-hash": image.content_hash})
        except BuildError as exc:
            if engine.image_id(image.base) is None:
                exc.hint = (f"base image {image.base} is not on the engine and could not be pulled: load it "
                            "(docker load / docker import) or map it with EDGE_BUILDER_BASE_IMAGES")
            raise
        self.echo(f"built {image.tag} in {time.perf_counter() - started:.0f} s")
        return image_id
