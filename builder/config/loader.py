"""YAML -> strict pydantic models, with errors that name file, field, line and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from builder.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    lines = {key_node.value: key_node.start_mark.line + 1 for key_node, _ in node.value}
    return _Mapping(mapping, lines)


class _Mapping(dict):
    """A dict that also knows the source line of each key."""

    def __init__(self, data: dict, lines: dict[str, int]):
        super().__init__(data)
        self.lines = lines


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path) -> dict:
    """Parse a YAML mapping; syntax errors become ConfigError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", hint="check the path") from exc
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}", hint="fix the YAML syntax") from exc
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{path}: expected a mapping at the top level, got {got}")
    return data


def line_of(data: Any, loc: tuple) -> int | None:
    """Best-effort source line for a pydantic error location."""
    line = None
    node = data
    for part in loc:
        if isinstance(node, _Mapping) and part in node.lines:
            line = node.lines[part]
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _fix_for(error: dict) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "remove it or check its spelling"
    if kind == "missing":
        return "add this field"
    if kind.startswith("literal_error") or kind == "enum":
        return "use one of the allowed values"
    return "fix the value"


def validation_problems(path: Path, data: dict, exc: ValidationError) -> list[str]:
    """One line per problem: `file:line: field: message (fix)`."""
    problems = []
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        line = line_of(data, loc)
        where = f"{path}:{line}" if line else str(path)
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {_field_path(loc)}: {message} ({_fix_for(error)})")
    return problems


def load_model(path: Path, model: type[M], context: dict | None = None) -> M:
    """Read `path` and validate it into `model`, raising one ConfigError listing every problem."""
    data = read_yaml(path)
    try:
        return model.model_validate(data, context={"path": path, **(context or {})})
    except ValidationError as exc:
        problems = validation_problems(path, data, exc)
        if len(problems) == 1:
            raise ConfigError(problems[0]) from None
        raise ConfigError(f"{path}: {len(problems)} problems:\n  " + "\n  ".join(problems)) from None
