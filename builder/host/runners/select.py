"""Pick the runner: `auto` uses Docker when an engine answers, else the local Python."""

from __future__ import annotations

from pathlib import Path

from builder.errors import EngineError


def select_runner(name: str, *, ca_bundle: Path | None = None, rebuild: bool = False, install_from: str = "wheelhouse",
                  registry: str | None = None, verbose: bool = False, echo=print):
    from builder.host.runners.local import LocalRunner

    if name == "local":
        echo("runner: local (--runner local): steps run in this Python environment")
        return LocalRunner(verbose)
    from builder.host.docker_api import Engine  # the Docker SDK takes a third of a second to import
    ok, why = Engine.available()
    if not ok:
        if name == "docker":
            raise EngineError(f"--runner docker: {why}",
                              hint="start Docker, set DOCKER_HOST or `docker context use`, or use --runner local")
        echo(f"runner: local (no Docker engine: {why})")
        return LocalRunner(verbose)
    from builder.host.runners.docker import DockerRunner

    echo(f"runner: docker ({why})")
    return DockerRunner(Engine.connect(), ca_bundle=ca_bundle, rebuild=rebuild, install_from=install_from,
                        registry=registry, verbose=verbose, echo=echo)
