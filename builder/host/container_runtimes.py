"""The OCI runtimes a target's device stage may require of its engine (`requires.container_runtime` in the
target's YAML), and what a backend tells a user who lacks one.

Any runtime an engine offers can be required by name; a backend that knows one registers how to install it,
how to make it the engine's default and what its containers reach (`register(ContainerRuntime(...))`), so
`builder doctor`, `builder devices` and the runners give its own fixes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from builder import plugins


@dataclass(frozen=True)
class ContainerRuntime:
    name: str  # the engine's name for it (`docker info`'s Runtimes)
    vendor: str = ""  # how users know it: "<vendor> runtime", "<vendor> container runtime" (default: its name)
    install: str = ""  # how to add it to an engine, said before "here" or "there"
    install_note: str = ""  # where it comes with the system, e.g. a board's own package
    unreachable_hint: str = ""  # the fix when a running container does not reach what the runtime mounts
    as_default: str | None = None  # how to make it the engine's default runtime
    default_needed_by: str | None = None  # what needs it as the default (builder's own containers ask for it)
    reaches: str = ""  # the hardware its containers reach, which the local runner needs on this machine
    present_here: Callable[[], bool] | None = None  # whether this machine has that hardware

    @property
    def label(self) -> str:
        return f"{self.vendor or self.name} runtime"

    @property
    def title(self) -> str:
        return f"{self.vendor or self.name} container runtime"

    def install_fix(self, where: str = "") -> str:
        """How to install it (`where`: "here", "there"), then restart the engine."""
        action = " ".join(filter(None, [self.install or f"install the {self.name} OCI runtime", where]))
        return action + (f" ({self.install_note})" if self.install_note else "") + " and restart Docker"

    def default_note(self, default: str | None) -> tuple[str, str | None]:
        """The engine's default runtime, and how to make it this one (builder's containers ask for it by name:
        only a `docker build` that needs it does not)."""
        if default == self.name:
            return f"default runtime {self.name}", None
        return (f"default runtime {default or 'unknown'}: enough for builder (its containers ask for {self.name})"
                + (f", not for {self.default_needed_by}" if self.default_needed_by else "")), self.as_default


_REGISTRY: dict[str, ContainerRuntime] = {}


def register(runtime: ContainerRuntime) -> None:
    _REGISTRY[runtime.name] = runtime


def known() -> dict[str, ContainerRuntime]:
    """The runtimes a backend describes."""
    plugins.load(host=True)
    return dict(_REGISTRY)


def get(name: str) -> ContainerRuntime:
    """The runtime `name`, as its backend describes it, or by its name alone."""
    return known().get(name) or ContainerRuntime(name)


def smoke_hint(name: str | None) -> str:
    """The fix when a module imports at build but not in a running container: the runtime that mounts its
    libraries (the target's, else every one a backend describes) is missing or not reached."""
    runtimes = [get(name)] if name else list(known().values())
    hints = [r.unreachable_hint or f"run the container with the {r.name} runtime (--runtime {r.name})" for r in runtimes]
    return "; or ".join(hints) or "the module needs something only a running container has: see the log above"
