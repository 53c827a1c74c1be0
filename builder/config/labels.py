"""A folder dataset's labels file: one image per line, its path in the folder, then its class id(s).

    # comments and blank lines are skipped
    cats/001.jpg 281
    cats/002.jpg 281,285        # several ids: any of them counts as right
    coffee.png, 967             # spaces, commas or tabs separate the fields
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from builder.errors import ConfigError

_FIELDS = re.compile(r"[\s,]+")
MAX_CLASS = 1 << 31


def lines_of(path: Path, what: str) -> Iterator[tuple[str, list[str], str]]:
    """(`file:N`, the line's fields, the line) of each line that is not blank or a comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the {what} file: {exc}", hint="give a UTF-8 text file") from None
    for number, line in enumerate(text.splitlines(), 1):
        if fields := [f for f in _FIELDS.split(line.split("#", 1)[0].strip()) if f]:
            yield f"{path}:{number}", fields, line


def read_labels(path: Path) -> dict[str, int | list[int]]:
    """Image path (relative to the folder, with /) -> its class id, or ids that all count as right."""
    labels: dict[str, int | list[int]] = {}
    for where, fields, line in lines_of(path, "labels"):
        if len(fields) < 2 or not all(f.isdigit() and int(f) < MAX_CLASS for f in fields[1:]):
            raise ConfigError(f"{where}: expected an image path and class ids (integers >= 0), got {line.strip()!r}",
                              hint="one image per line: `path/in/folder.jpg 281` (several ids: `281,285`)")
        name = fields[0].replace("\\", "/")
        if name in labels:
            raise ConfigError(f"{where}: {name} is labeled twice", hint="keep one line per image")
        ids = [int(f) for f in fields[1:]]
        labels[name] = ids[0] if len(ids) == 1 else ids
    if not labels:
        raise ConfigError(f"{path}: the labels file labels no image", hint="one image per line: `path.jpg 281`")
    return labels
