"""A folder dataset's boxes file: one object per line, its image's path in the folder, its class id, then its box
as xmin ymin xmax ymax, normalized to the original image (0..1). Images the file does not name have no objects.

    # comments and blank lines are skipped
    people/001.jpg 0 0.33 0.13 0.55 0.37
    people/001.jpg 0 0.61 0.20 0.70 0.35     # a second face in the same image
    street.png, 2, 0.1, 0.5, 0.4, 0.9        # spaces, commas or tabs separate the fields
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from builder.config.labels import MAX_CLASS, lines_of
from builder.errors import ConfigError

HINT = "one box per line: `path/in/folder.jpg class xmin ymin xmax ymax`, coordinates 0..1 of the original image"


class Box(NamedTuple):
    """An object: its class and its corners, normalized (0..1) to the image it is in."""

    cls: int
    xmin: float
    ymin: float
    xmax: float
    ymax: float


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None  # NaN is no coordinate


def box_problem(xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[str, str] | None:
    """What is wrong with a box's corners, and the fix; None when nothing is."""
    if not all(0 <= c <= 1 for c in (xmin, ymin, xmax, ymax)):
        return (f"coordinates {xmin:g} {ymin:g} {xmax:g} {ymax:g} are not all within 0..1",
                "divide pixel coordinates by the image's width (x) and height (y)")
    if xmin >= xmax or ymin >= ymax:
        return "the box is empty (xmin < xmax and ymin < ymax are needed)", "give the corners in the order xmin ymin xmax ymax"
    return None


def read_boxes(path: Path) -> dict[str, list[Box]]:
    """Image path (relative to the folder, with /) -> its objects, in file order."""
    boxes: dict[str, list[Box]] = {}
    for where, fields, line in lines_of(path, "boxes"):
        corners = [_number(f) for f in fields[2:]]
        if len(fields) != 6 or not (fields[1].isdigit() and int(fields[1]) < MAX_CLASS) or None in corners:
            raise ConfigError(f"{where}: expected an image path, a class id (integer >= 0) and four coordinates, "
                              f"got {line.strip()!r}", hint=HINT)
        if problem := box_problem(*corners):
            raise ConfigError(f"{where}: {problem[0]}", hint=problem[1])
        xmin, ymin, xmax, ymax = corners
        boxes.setdefault(fields[0].replace("\\", "/"), []).append(Box(int(fields[1]), xmin, ymin, xmax, ymax))
    if not boxes:
        raise ConfigError(f"{path}: the boxes file has no box", hint=HINT)
    return boxes
