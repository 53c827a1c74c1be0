"""Lookups over the registered step kinds."""

from __future__ import annotations

from pydantic import ValidationError

from builder import plugins
from builder.errors import ConfigError
from builder.stage.steps.base import _REGISTRY, Step

# builder/stage/steps/__init__.py has imported the project's step modules before this one is used (a submodule
# imports its package first); plugins.load() imports the plugins' step classes.


def get(kind: str) -> type[Step]:
    plugins.load()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown step kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def all_steps() -> dict[str, type[Step]]:
    plugins.load()
    return dict(sorted(_REGISTRY.items()))


def check_call(kind: str, params: dict, where: str) -> None:
    """Validate a step reference from a config file: a ValueError names what is wrong (registry_refs.py)."""
    step = get(kind)
    try:
        step.Params(**params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{where}: bad params for step {kind!r}: {problems}") from None


def params_of(kind: str, params: dict):
    try:
        return get(kind).Params(**params)
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"step {kind}: {exc}") from None
