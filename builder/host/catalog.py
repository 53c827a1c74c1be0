"""Finds and loads the shipped targets and recipes (by scanning their folders)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

from pydantic import ValidationError

from builder import plugins
from builder.config.loader import problems_error, read_yaml, validate_data, validation_problems
from builder.config.recipe import Recipe
from builder.config.target import Target
from builder.errors import ConfigError
from builder.host.registry_refs import recipe_problems, target_problems


def project_root() -> Path:
    """Where targets/, recipes/ and dockerfiles/ live (EDGE_BUILDER_HOME overrides)."""
    return Path(os.environ.get("EDGE_BUILDER_HOME") or Path(__file__).resolve().parents[2])  # builder/host/catalog.py


def targets_dir() -> Path:
    return project_root() / "targets"


def recipes_dir() -> Path:
    return project_root() / "recipes"


def dockerfiles_dir() -> Path:
    return project_root() / "dockerfiles"


def data_dirs(name: str) -> list[Path]:
    """The project's `dockerfiles/<name>` (or `dockerfiles/` itself) and every backend's `<name>/`, in that order."""
    own = dockerfiles_dir() / name if name != "dockerfiles" else dockerfiles_dir()
    return [own] + [folder for plugin in plugins.load() if (folder := plugin.folder(name))]


def target_files() -> dict[str, Path]:
    """Every target by id: the project's, then the installed plugins' (a plugin cannot replace one)."""
    found = {p.stem: p for p in sorted(targets_dir().glob("*.yaml"))}
    for plugin in plugins.load():
        folder = plugin.folder("targets")
        for path in sorted(folder.glob("*.yaml")) if folder else ():
            if path.stem in found:
                raise ConfigError(f"plugin {plugin.name}: target {path.stem!r} ({path}) is already defined by "
                                  f"{found[path.stem]}", hint="give the plugin's target another id")
            found[path.stem] = path
    return found


def target_ids() -> list[str]:
    return sorted(target_files())


def load_target(target: str | Path) -> Target:
    """Load a target by id (targets/<id>.yaml or a plugin's) or by path."""
    path = Path(target)
    if path.suffix not in (".yaml", ".yml"):
        files = target_files()
        if str(target) not in files:
            raise ConfigError(f"unknown target {target!r}", hint=f"known targets: {', '.join(sorted(files))}")
        path = files[str(target)]
    data = read_yaml(path)
    loaded = validate_data(path, data, Target)
    problems = target_problems(path, data, loaded)
    if problems:
        raise problems_error(path, problems)
    if loaded.id != path.stem:
        raise ConfigError(f"{path}: id {loaded.id!r} must match the file name {path.stem!r}")
    return loaded


def load_targets() -> dict[str, Target]:
    return {tid: load_target(tid) for tid in target_ids()}


def recipe_paths() -> list[Path]:
    return sorted(recipes_dir().glob("*.yaml"))


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_recipe(path: str | Path, target_id: str | None = None) -> Recipe:
    """Load a recipe; with a target id, its `targets.<id>` overrides are merged in."""
    path = Path(path)
    return _recipe(path, _read_recipe(path), target_id)


def _read_recipe(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"recipe not found: {path}", hint="give the path to a recipe YAML file (see `builder recipes`)")
    return read_yaml(path)


def _recipe(path: Path, data: dict, target_id: str | None = None) -> Recipe:
    recipe = validate_data(path, data, Recipe)
    problems = recipe_problems(path, data, recipe)
    if problems:
        raise problems_error(path, problems)
    unknown = sorted(set(recipe.targets) - set(target_ids()))
    if unknown:
        raise ConfigError(f"{path}: targets.{unknown[0]}: unknown target", hint=f"known targets: {', '.join(target_ids())}")
    if target_id is None or target_id not in recipe.targets:
        return recipe
    merged = _merge(data, data["targets"][target_id])
    try:
        recipe = Recipe.model_validate(merged, context={"path": path})
    except ValidationError as exc:
        problems = validation_problems(path, merged, exc)
    else:
        problems = recipe_problems(path, merged, recipe)
    if problems:
        raise ConfigError(f"with targets.{target_id} overrides: " + "; ".join(problems))
    return recipe


def validate_paths(paths: list[Path]) -> list[str]:
    """Load every target and recipe given (folders are scanned); return every problem found.

    A folder without YAML files is a problem too: "all valid" must mean something was checked.
    """
    problems: list[str] = []
    for path in paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        if not files:
            problems.append(f"{path}: no *.yaml files to validate")
        for file in files:
            try:
                if file.parent.name == "targets" or file.resolve().parent == targets_dir().resolve():
                    load_target(file)
                else:
                    data = _read_recipe(file)  # parsed once for the recipe and each target's overrides
                    for tid in _recipe(file, data).targets:
                        _recipe(file, data, tid)
            except ConfigError as exc:
                problems.append(exc.message + (f" (hint: {exc.hint})" if exc.hint else ""))
    return problems
