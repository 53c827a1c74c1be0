"""YAML -> strict pydantic models, with errors that name file, field, line and fix.

Config files come from users, so reading one is bounded: only regular files of at most
MAX_FILE_BYTES, UTF-8 only, nesting at most MAX_DEPTH deep and at most MAX_EXPANDED nodes
and characters once aliases are expanded (a "billion laughs" file is a few lines long).
Duplicate keys are errors: YAML would silently keep the last one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from builder.config.common import kind_of
from builder.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

MAX_FILE_BYTES = 1 << 18
MAX_DEPTH = 32
MAX_EXPANDED = 1 << 20
_UTF8 = "save the file as UTF-8"


class _Refused(yaml.YAMLError):
    """A well-formed document this loader will not build, at `problem_mark`."""

    def __init__(self, problem: str, mark: yaml.Mark, hint: str):
        super().__init__(problem)
        self.problem, self.problem_mark, self.hint = problem, mark, hint


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and bounds nesting and aliases."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (size, depth) with aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark,
                           "recipes and targets need a few levels: flatten the structure")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(event, yaml.AliasEvent):
            if id(node) not in self._expanded:
                raise _Refused(f"alias *{event.anchor} is inside its own anchor", event.start_mark,
                               "an alias must refer to a node defined before it, not to one that contains it")
            return node
        size, depth = self._measure(node)
        if depth > MAX_DEPTH:
            raise _Refused(f"aliases nest this node more than {MAX_DEPTH} levels deep", node.start_mark,
                           "recipes and targets need a few levels: use fewer nested aliases")
        if size > MAX_EXPANDED:
            raise _Refused(f"aliases expand this node to {size:,} nodes and characters (at most {MAX_EXPANDED:,})",
                           node.start_mark, "write the values out, or use fewer aliases (is this a YAML bomb?)")
        self._expanded[id(node)] = size, depth
        return node

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        if isinstance(node, yaml.ScalarNode):
            return 1 + len(node.value), 1
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        measured = [self._expanded[id(child)] for child in children]
        return 1 + sum(s for s, _ in measured), 1 + max((d for _, d in measured), default=0)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:  # before merge keys (<<) are flattened in: overriding those is fine
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key, line = loader.construct_object(key_node), key_node.start_mark.line + 1
            if key in lines:
                raise _Refused(f"duplicate key {key!r} (lines {lines[key]} and {line})", key_node.start_mark,
                               "keep one of them: YAML would silently drop the first")
            lines[key] = line
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    for key_node, _ in node.value:  # merged keys too, at the line of their anchor
        if isinstance(key_node, yaml.ScalarNode):
            lines.setdefault(loader.construct_object(key_node), key_node.start_mark.line + 1)
    return _Mapping(mapping, lines)


class _Mapping(dict):
    """A dict that also knows the source line of each key."""

    def __init__(self, data: dict, lines: dict[Any, int]):
        super().__init__(data)
        self.lines = lines


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_bytes(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES (a FIFO or a device would block or never end)."""
    try:
        kind = kind_of(os.stat(path).st_mode)
        if kind != "regular file":
            raise ConfigError(f"{path}: is a {kind}, not a regular file", hint="give the path of a YAML file")
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):  # replaced since the check
                raise ConfigError(f"{path}: is not a regular file", hint="give the path of a YAML file")
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}", hint="check the path") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES >> 10} KiB",
                          hint="recipes and targets are a few KiB: is this the right file?")
    return data


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or data.startswith(b"\x00\x00\xfe\xff"):
        raise ConfigError(f"{path}: encoded as UTF-16 or UTF-32 (it starts with a byte order mark)", hint=_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                          hint=_UTF8) from None


def read_yaml(path: Path) -> dict:
    """Parse a YAML mapping; syntax errors become ConfigError with the line."""
    text = _decode(path, _read_bytes(path))
    try:
        data = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{path}:{line}: invalid YAML: character {exc.character:#06x} is not allowed",
                          hint=f"remove control characters; {_UTF8}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}", hint=getattr(exc, "hint", "fix the YAML syntax")) from exc
    except (ValueError, AttributeError) as exc:  # an explicit tag on a value that does not fit: !!int x, !!timestamp x
        raise ConfigError(f"{path}: invalid YAML value: {exc}", hint="remove the explicit !!tag or fix its value") from None
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
        if part == "[key]":  # pydantic's marker: the problem is the dict key just named
            out += " (the key)"
        else:
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


def problem_at(path: Path, data: dict, loc: tuple, message: str, fix: str = "fix the value") -> str:
    """One problem as `file:line: field: message (fix)`, the line found from `loc` in the data read."""
    line = line_of(data, loc)
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {_field_path(loc)}: {message} ({fix})"


def validation_problems(path: Path, data: dict, exc: ValidationError) -> list[str]:
    """One line per problem: `file:line: field: message (fix)`."""
    problems = []
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        problems.append(problem_at(path, data, loc, error["msg"].removeprefix("Value error, "), _fix_for(error)))
    return problems


def problems_error(path: Path, problems: list[str]) -> ConfigError:
    """One ConfigError listing every problem found in `path`."""
    if len(problems) == 1:
        return ConfigError(problems[0])
    return ConfigError(f"{path}: {len(problems)} problems:\n  " + "\n  ".join(problems))


def load_model(path: Path, model: type[M], context: dict | None = None) -> M:
    """Read `path` and validate it into `model`, raising one ConfigError listing every problem."""
    return validate_data(path, read_yaml(path), model, context)


def validate_data(path: Path, data: dict, model: type[M], context: dict | None = None) -> M:
    """Validate `data` read from `path` into `model`, raising one ConfigError listing every problem."""
    try:
        return model.model_validate(data, context={"path": path, **(context or {})})
    except ValidationError as exc:
        raise problems_error(path, validation_problems(path, data, exc)) from None
