"""The ONNX hub: PyTorch -> ONNX, checking, simplification, static shapes (TensorFlow -> ONNX: its
backend).

PyTorch export uses the legacy TorchScript exporter (`dynamo=False`): with torch
2.13 the dynamo exporter needs `onnxscript` and rewrites graphs in ways that
downstream converters handle less well, while the tracer
exports plain CNNs into the classic Conv/Pad/Gemm graphs they expect.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from builder.code_trust import import_factory
from builder.errors import ConfigError, ConversionError
from builder.stage import runtimes
from builder.stage.runtimes import Session
from builder.util import atomic_write_bytes, create_beside


def _replace_atomically(tmp: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)


def _tmp_beside(out: Path, suffix: str = ".onnx") -> Path:
    fd, tmp = create_beside(out, suffix)
    os.close(fd)
    return tmp


def save_onnx(model, out: Path) -> None:
    """Write an ONNX ModelProto atomically (models under 2 GB, weights inline)."""
    atomic_write_bytes(out, model.SerializeToString())


def load_state_dict(path: Path) -> dict:
    """Tensors only (`weights_only=True`); accepts old non-zip files and {'state_dict': ...} checkpoints."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConversionError(
            f"cannot load state dict {path}: {exc}", cause="bad-weights",
            hint="give a file saved with torch.save(model.state_dict(), ...); pickled modules are not loaded",
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict", cause="bad-weights")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_torch_module(factory, state_dict, torchscript, exported_program, example, *, trusted: bool = False):
    """The module to export or run; a factory is imported from installed packages only unless `trusted`."""
    import torch

    given = [s for s in (factory, torchscript, exported_program) if s is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one of a model factory, a TorchScript file or an ExportedProgram",
                          hint="a state dict goes with a factory")
    if state_dict is not None and factory is None:
        raise ConfigError("a state dict needs a model factory to load into")
    if torchscript is not None:
        return torch.jit.load(str(torchscript), map_location="cpu").eval()
    if exported_program is not None:
        # Its module() refuses train()/eval(), which the TorchScript exporter calls: trace it first.
        return torch.jit.trace(torch.export.load(str(exported_program)).module(), (example,))
    module = import_factory(factory, trusted=trusted)()
    if state_dict is not None:
        result = module.load_state_dict(load_state_dict(state_dict), strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ConversionError(
                f"state dict {state_dict} does not fit {factory}: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}",
                cause="state-dict-mismatch", hint="check that the factory builds the architecture the weights are for",
            )
    return module.eval()


def torch_to_onnx(
    out: Path,
    *,
    input_shape: list[int],
    factory: str | None = None,
    state_dict: Path | None = None,
    torchscript: Path | None = None,
    exported_program: Path | None = None,
    opset: int = 17,
    input_names: list[str] = ["input"],  # noqa: B006 - never mutated
    output_names: list[str] = ["output"],  # noqa: B006
    dynamic_axes: dict | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Export a PyTorch model to ONNX with the TorchScript exporter, deterministically."""
    import torch

    torch.manual_seed(0)
    example = torch.randn(*input_shape)
    module = load_torch_module(factory, state_dict, torchscript, exported_program, example,
                               trusted=trust_remote_code)
    tmp = _tmp_beside(out)
    try:
        with torch.no_grad():
            torch.onnx.export(
                module, (example,), str(tmp), dynamo=False, opset_version=opset,
                input_names=list(input_names), output_names=list(output_names),
                dynamic_axes=dynamic_axes, do_constant_folding=True,
            )
        _replace_atomically(tmp, out)
    except (ConfigError, ConversionError):
        raise
    except Exception as exc:
        raise ConversionError(f"torch.onnx.export failed: {exc}", cause="export-failed",
                              hint="try another opset, or export a TorchScript file yourself") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return {"opset": opset, "exporter": "torchscript", "torch": torch.__version__}


def check_onnx(path: Path) -> dict:
    """Structural check plus full shape inference; returns opset, IR version and IO shapes."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ConversionError(f"{path} is not a valid ONNX model: {exc}", cause="invalid-onnx",
                              hint="re-export the model; check the exporter's opset") from exc

    def dims(values):
        return {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in values}

    initializers = {i.name for i in model.graph.initializer}
    return {
        "ir_version": model.ir_version,
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "inputs": dims(i for i in model.graph.input if i.name not in initializers),
        "outputs": dims(model.graph.output),
        "nodes": len(model.graph.node),
    }


def _fix_dims(model, input_shapes: dict[str, list[int]]):
    import onnx

    graph_inputs = {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
    unknown = set(input_shapes) - graph_inputs
    if unknown:
        raise ConfigError(f"input_shapes names {sorted(unknown)} are not model inputs {sorted(graph_inputs)}")
    for value in model.graph.input:
        if value.name in input_shapes:
            shape = input_shapes[value.name]
            dims = value.type.tensor_type.shape.dim
            if len(dims) != len(shape):
                raise ConfigError(f"input {value.name!r} has rank {len(dims)}, input_shapes gives {shape}")
            for dim, size in zip(dims, shape):
                dim.Clear()
                dim.dim_value = int(size)
    del model.graph.value_info[:]
    for value in model.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.dim_value:
                dim.Clear()
    return onnx.shape_inference.infer_shapes(model)


def fix_static_shapes(src: Path, out: Path, input_shapes: dict[str, list[int]]) -> None:
    """Set the named inputs' dynamic dims to fixed sizes and re-infer all shapes."""
    import onnx

    save_onnx(_fix_dims(onnx.load(str(src)), input_shapes), out)


def _random_feeds(session: Session, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for i in session.inputs:
        shape = [d if d > 0 else 1 for d in i.shape]
        try:
            dtype = np.dtype(i.dtype)
        except TypeError:
            raise ConversionError(f"cannot make verification data for input {i.name!r} of type {i.dtype}") from None
        if np.issubdtype(dtype, np.floating):
            feeds[i.name] = rng.standard_normal(shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[i.name] = rng.integers(0, 10, shape).astype(dtype)
        else:
            raise ConversionError(f"cannot make verification data for input {i.name!r} of type {i.dtype}")
    return feeds


def max_output_diff(a: Path, b: Path, samples: int, seed: int = 0) -> float:
    """Run both models in the ONNX format's runtime on seeded random inputs (shaped for `b`); raise unless
    allclose."""
    sa, sb = runtimes.load(a), runtimes.load(b)
    rng, worst = np.random.default_rng(seed), 0.0
    for _ in range(samples):
        feeds = _random_feeds(sb, rng)
        outputs = zip(sa.run_raw([feeds[i.name] for i in sa.inputs]), sb.run_raw([feeds[i.name] for i in sb.inputs]))
        for ya, yb in outputs:
            if ya.shape != yb.shape or not np.allclose(ya, yb, rtol=1e-3, atol=1e-4):
                diff = float(np.max(np.abs(ya.astype(np.float64) - yb))) if ya.shape == yb.shape else float("inf")
                raise ConversionError(f"simplified model {b.name} differs from {a.name} (max abs diff {diff:.3g})",
                                      cause="simplify-changed-outputs", hint="set simplify: false for this model")
            worst = max(worst, float(np.max(np.abs(ya.astype(np.float64) - yb), initial=0.0)))
    return worst


def simplify_onnx(
    src: Path, out: Path, *, input_shapes: dict[str, list[int]] | None = None, verify_samples: int = 3
) -> dict:
    """onnxslim (constant folding, fusion, dead-node removal), optionally with static input shapes.

    The result is checked against the source in the ONNX format's runtime on seeded random inputs.
    """
    import onnx
    import onnxslim

    model = onnx.load(str(src))
    nodes_before = len(model.graph.node)
    if input_shapes:
        model = _fix_dims(model, input_shapes)
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:
        raise ConversionError(f"onnxslim failed on {src}: {exc}", cause="simplify-failed",
                              hint="set simplify: false for this model") from exc
    tmp = _tmp_beside(out)
    try:
        onnx.save(slim, str(tmp))
        diff = max_output_diff(src, tmp, verify_samples) if verify_samples else None
        _replace_atomically(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"tool": f"onnxslim {onnxslim.__version__}", "nodes_before": nodes_before,
            "nodes_after": len(slim.graph.node), "max_abs_diff": diff}
