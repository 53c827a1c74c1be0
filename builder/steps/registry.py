"""Lookups over the registered step kinds."""

from __future__ import annotations

from pydantic import ValidationError

from builder.errors import ConfigError
from builder.steps.base import _REGISTRY, Step


def _load_all() -> None:
    """Every step module of the project and of the installed plugins (classes register on import)."""
    import builder.steps  # noqa: F401
    from builder import plugins

    plugins.load()


def get(kind: str) -> type[Step]:
    _load_all()
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown step kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def all_steps() -> dict[str, type[Step]]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def check_call(kind: str, params: dict, where: str) -> None:
    """Validate a step reference from a config file (raises ValueError for pydantic to report)."""
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
