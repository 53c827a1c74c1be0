"""What a recipe or target names in the registries: step kinds and their params, formats, runtimes.

catalog.py checks these after the file's model validated: config/ stays data validation, so the
step modules can import config/ without a cycle. Each registry loads the plugins before it answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from builder import formats
from builder.config.loader import problem_at
from builder.config.recipe import Recipe
from builder.config.target import Target
from builder.stage import runtimes
from builder.stage.steps import registry


def recipe_problems(path: Path, data: dict, recipe: Recipe) -> list[str]:
    """`file:line: field: message` for each step of the recipe's `steps:` that no step kind accepts."""
    found = [(("steps", i), _step_problem(spec.kind, spec.params)) for i, spec in enumerate(recipe.steps or [])]
    return [problem_at(path, data, loc, problem) for loc, problem in found if problem]


def target_problems(path: Path, data: dict, target: Target) -> list[str]:
    """`file:line: field: message` for each format, runtime, chain step or device-only kind nobody registered."""
    found = [(("format",), _unknown("format", target.format, formats.all_formats())),
             (("runtime",), _unknown("runtime", target.runtime, runtimes.names()))]
    found += [(("variants", precision, i), _step_problem(step.step, step.params))
              for precision, chain in target.variants.items() for i, step in enumerate(chain)]
    found += [(("device_only", i), _step_problem(kind)) for i, kind in enumerate(target.device_only)]
    return [problem_at(path, data, loc, problem) for loc, problem in found if problem]


def _unknown(what: str, name: str, known: Iterable[str]) -> str | None:
    return None if name in known else f"unknown {what} {name!r}; known: {', '.join(sorted(known))}"


def _step_problem(kind: str, params: dict | None = None) -> str | None:
    """Why `kind` (with `params`, when given) is not a valid step call, or None."""
    try:
        if params is None:
            registry.get(kind)
        else:
            registry.check_call(kind, params, where="params")
    except ValueError as exc:
        return str(exc)
    return None
