"""Layer-by-layer error: a quantized artifact's intermediate tensors against fp32's, on the same samples.

A backend registers its runtime's tensor reader (`register(runtime, reader)`); the `layer_diff` step
(steps/layer_diff.py) reads every intermediate tensor of the fp32 artifact and of a variant's, as float32
(integer tensors dequantized with their scale and zero point), pairs them (by tensor name; the rest by position:
the next unmatched fp32 tensor of the same shape, in execution order) and compares each pair with the figures the
validation and the accuracy search use (metrics.compare: SNR dB and cosine). The worst layer is the lowest SNR;
ties go by execution order, so the same model and samples always name the same worst layer.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from builder import plugins
from builder.errors import StepError
from builder.stage import metrics

METRIC = "snr_db"  # lower is worse; cosine goes beside it
WORST = 10  # layers named in the record's `worst`
CSV_FIELDS = ("rank", "name", "node_id", "op_type", "fp32_name", "matched_by", "snr_db", "cosine", "max_abs_error")


@dataclass(frozen=True)
class Tensor:
    """One intermediate tensor of a model, over every sample, as float32."""

    name: str
    node_id: str  # the node that writes it, as Model Explorer's graph of the model keys it
    op_type: str
    values: list[np.ndarray]  # one array per sample

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values[0].shape)


@dataclass
class Tensors:
    """What a reader found: a model's intermediate tensors in execution order."""

    reader: str
    tensors: list[Tensor]
    graph: str = "main"  # the graph's id in Model Explorer
    skipped: list[str] = field(default_factory=list)  # tensors it could not read as float (why, each)


Reader = Callable[[Path, list[np.ndarray], Mapping[str, object], logging.Logger], Tensors]
"""(the model, float32 samples as the dataset holds them, its session's runtime options, a log) -> its tensors."""
_READERS: dict[str, Reader] = {}


def register(runtime: str, reader: Reader) -> None:
    """A backend's reader of the intermediate tensors of the models its runtime runs."""
    _READERS[runtime] = reader


def has_reader(runtime: str) -> bool:
    plugins.load()
    return runtime in _READERS


def reader_of(runtime: str) -> Reader:
    plugins.load()
    try:
        return _READERS[runtime]
    except KeyError:
        raise StepError(f"the {runtime} runtime has no intermediate-tensor reader",
                        hint=f"layer diffs are taken for {', '.join(sorted(_READERS)) or 'no runtime'}; "
                             "run without --layer-diff") from None


@dataclass(frozen=True)
class Pair:
    candidate: Tensor
    reference: Tensor
    matched_by: str  # "name" or "position"


def match(reference: Tensors, candidate: Tensors) -> list[Pair]:
    """The candidate's tensors paired with fp32's: by name, else by position (the next unmatched fp32 tensor of
    the same shape after the last one paired, both in execution order). In the candidate's execution order."""
    by_name = {t.name: t for t in reference.tensors}
    named = {t.name for t in candidate.tensors if t.name in by_name and by_name[t.name].shape == t.shape}
    free = [t for t in reference.tensors if t.name not in named]
    pairs, cursor = [], 0
    for t in candidate.tensors:
        if t.name in named:
            pairs.append(Pair(t, by_name[t.name], "name"))
            continue
        found = next((i for i in range(cursor, len(free)) if free[i].shape == t.shape), None)
        if found is not None:
            pairs.append(Pair(t, free[found], "position"))
            cursor = found + 1
    return pairs


def _figures(pair: Pair) -> dict:
    found = metrics.compare(pair.reference.values, pair.candidate.values)
    return {"snr_db": round(found["snr_db"], 4), "cosine": round(found["cosine"], 6),
            "max_abs_error": round(found["max_abs_error"], 6)}


def record(reference: Tensors, candidate: Tensors, samples: int, worst: int = WORST) -> dict:
    """The `records.LayerDiff` of a candidate against fp32: every matched layer, worst first."""
    pairs = match(reference, candidate)
    if not pairs:
        raise StepError(f"none of the {len(candidate.tensors)} intermediate tensors matched one of fp32's "
                        f"{len(reference.tensors)} by name or by shape and position",
                        hint="the two graphs are too different to compare layer by layer; run without --layer-diff")
    layers = [{"name": p.candidate.name, "node_id": p.candidate.node_id, "op_type": p.candidate.op_type,
               "fp32_name": p.reference.name, "matched_by": p.matched_by, **_figures(p)} for p in pairs]
    order = {id(x): i for i, x in enumerate(layers)}
    layers.sort(key=lambda x: (x["snr_db"], order[id(x)]))
    return {"reader": candidate.reader, "reference_reader": reference.reader, "metric": METRIC, "samples": samples,
            "layers": layers, "worst": [x["name"] for x in layers[:worst]],
            "unmatched": len(candidate.tensors) - len(pairs),
            **({"skipped": candidate.skipped} if candidate.skipped else {})}


def table_csv(diff: dict) -> bytes:
    """layer_diff_<variant>.csv: the matched layers, worst first."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({"rank": i, **layer} for i, layer in enumerate(diff["layers"], 1))
    return buf.getvalue().encode()


def noise_db(layers: list[dict]) -> dict[str, float]:
    """Per node, its worst tensor's noise/signal dB (-SNR): larger is worse, as Model Explorer's gradient reds it."""
    found: dict[str, float] = {}
    for x in layers:
        found[x["node_id"]] = max(found.get(x["node_id"], -np.inf), -x["snr_db"])
    return found
