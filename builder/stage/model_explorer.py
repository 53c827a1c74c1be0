"""Per-node figures as Google Model Explorer's "node data" files, which `model-explorer MODEL --node_data_paths=FILE`
draws on the model's graph. Any per-layer figure goes through here: a profile's time, a layer's quantization error.

The file is a ModelNodeData: graph id -> GraphNodeData (`results`: node key -> {"value"}, and a `gradient` that
colours the nodes from the smallest value to the largest). A node key is a node's id in Model Explorer's graph of
the model (for a flatbuffer model, its op's index in the subgraph) or the name of one of its output tensors. It is
written here as JSON in that format, so reading a run's files never needs Model Explorer installed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.util import atomic_write_bytes

LOW_TO_HIGH = ({"stop": 0, "bgColor": "#ffffff"}, {"stop": 0.5, "bgColor": "#fdba74"}, {"stop": 1, "bgColor": "#dc2626"})
"""white for the smallest value, red for the largest: where the time (or the error) is."""


@dataclass(frozen=True)
class NodeValues:
    """One figure per node of one graph of a model."""

    name: str  # what the figure is, as Model Explorer's side panel names its column ("time ms")
    graph: str  # the graph's id in Model Explorer (a subgraph's name, "main")
    values: Mapping[str, float]  # node key -> value


def node_data(figures: NodeValues) -> dict:
    """The ModelNodeData of `figures`, as its JSON holds it."""
    return {figures.graph: {
        "name": figures.name,
        "results": {key: {"value": round(float(value), 6)} for key, value in figures.values.items()},
        "gradient": [dict(stop) for stop in LOW_TO_HIGH],
    }}


def write(path: Path, figures: NodeValues) -> Path:
    atomic_write_bytes(path, json.dumps(node_data(figures), indent=1).encode())
    return path


def how_to_open(model: str, node_data_file: str) -> str:
    """The command that shows `node_data_file` on `model`'s graph."""
    return f"pip install ai-edge-model-explorer && model-explorer {model} --node_data_paths={node_data_file}"


def outputs_beside(artifact: str, variant: str, table: str, node_data: str) -> dict[str, str]:
    """A per-layer step's outputs beside the artifact: its table (`table` by variant) and its node data (`node_data`
    by the artifact's stem)."""
    folder = Path(artifact).parent
    return {"table": str(folder / table.format(variant=variant)),
            "node_data": str(folder / node_data.format(stem=Path(artifact).stem))}
