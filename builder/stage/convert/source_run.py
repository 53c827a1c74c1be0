"""Run a source model in the framework it came in, so every artifact can be compared with the source.

A format a runtime loads runs in that runtime: its backend says so (`in_its_runtime`); a SavedModel (and so a
Keras model, through the SavedModel `convert.keras` writes) runs in TensorFlow, and PyTorch files in PyTorch.
Outputs come back as float32 arrays, one list per sample, in the model's own output order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from builder import plugins
from builder.errors import ConfigError

# (model path, the PyTorch factory or None, the example input's shape, whether the user trusts the recipe's
# code) -> a function of one batch
Runner = Callable[[Path, str, str | None, list[int], bool], Callable[[np.ndarray], list[np.ndarray]]]
_RUNNERS: dict[str, Runner] = {}


def runner(*formats: str):
    def register(fn: Runner) -> Runner:
        _RUNNERS.update(dict.fromkeys(formats, fn))
        return fn

    return register


def runnable(fmt: str) -> bool:
    plugins.load()
    return fmt in _RUNNERS


_SAVED_AS = {"keras": ("convert.keras", "saved_model")}  # format -> the step that saves it in a runnable one


def saved_as(fmt: str) -> tuple[str, str] | None:
    """(step kind, format) that makes a source of `fmt` runnable, when no runner takes it as it is."""
    return _SAVED_AS.get(fmt)


def run_source(path: Path, fmt: str, samples: np.ndarray, *, factory: str | None = None,
               input_shape: list[int] | None = None, trusted: bool = False) -> Iterator[list[np.ndarray]]:
    """Each sample's outputs, sample by sample (a batch of one, as the artifacts are run). A PyTorch source
    is built by `factory` (source.torch.factory, from an installed package unless `trusted`) and traced with
    an input of `input_shape`."""
    if not runnable(fmt):
        raise ConfigError(f"no framework here runs a {fmt} source", hint=f"runnable: {', '.join(sorted(_RUNNERS))}")
    call = _RUNNERS[fmt](path, fmt, factory, input_shape or [1, *samples.shape[1:]], trusted)
    for sample in samples:
        yield [np.asarray(o, np.float32) for o in call(sample[None])]


def in_its_runtime(path: Path, fmt: str, factory: str | None, input_shape: list[int], trusted: bool):
    """A source in a format its runtime loads where the source runs (a backend registers its format with it)."""
    from builder.stage.runtimes import load

    session = load(path)
    return lambda x: session.run([x])


@runner("saved_model")
def _saved_model(path: Path, fmt: str, factory: str | None, input_shape: list[int], trusted: bool):
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    (name, spec), = fn.structured_input_signature[1].items()

    def call(x: np.ndarray) -> list[np.ndarray]:
        outputs = fn(**{name: tf.constant(x, dtype=spec.dtype)})
        return [outputs[k].numpy() for k in sorted(outputs)]  # by name, as TF's converters to a flatbuffer order them

    return call


@runner("pytorch_state_dict", "torchscript", "exported_program")
def _torch(path: Path, fmt: str, factory: str | None, input_shape: list[int], trusted: bool):
    import torch

    from builder.stage.convert.onnx import load_torch_module

    example = torch.zeros(input_shape)
    module = load_torch_module(factory, path if fmt == "pytorch_state_dict" else None,
                               path if fmt == "torchscript" else None, path if fmt == "exported_program" else None,
                               example, trusted=trusted)

    def call(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(x)))
        return [t.numpy() for t in (out if isinstance(out, (tuple, list)) else [out])]

    return call
