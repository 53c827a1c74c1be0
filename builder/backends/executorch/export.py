"""A torch module -> an ExecuTorch program (.pte) with the XNNPACK delegate: fp32, or PT2E static int8.

Export: torch.export, then executorch.exir.to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()]),
then to_executorch(). Int8: torchao's PT2E flow with ExecuTorch's XNNPACKQuantizer (8-bit symmetric per-channel
weights, 8-bit per-tensor activations), calibrated on every sample, then the same lowering. ExecuTorch and torch
are imported when a function runs: the backend loads in images that have neither.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from builder.errors import ConversionError
from builder.util import atomic_write_bytes


def _delegation(edge: Any) -> dict:
    """How much of the lowered graph XNNPACK took: partitions, and the ops it left to portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    # `getitem` only unpacks a delegate's outputs: it is not an op XNNPACK left behind
    outside = {op: b.non_delegated for op, b in info.delegation_by_operator.items()
               if b.non_delegated and op != "getitem"}
    return {"delegated_partitions": info.num_delegated_subgraphs, "delegated_nodes": info.num_delegated_nodes,
            "nodes_outside_xnnpack": sum(outside.values()), "ops_outside_xnnpack": outside}


def _lower(program: Any, out: Path) -> dict:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    facts = _delegation(edge)
    atomic_write_bytes(out, edge.to_executorch().buffer)
    return facts


def _report(out: Path, started: float, precision: str, facts: dict) -> dict:
    import torch
    from executorch.version import __version__ as executorch_version

    return {"precision": precision, "size": out.stat().st_size, "seconds": round(time.perf_counter() - started, 2),
            "converter": f"executorch {executorch_version}, torch {torch.__version__}", **facts}


def _failed(what: str, exc: Exception) -> ConversionError:
    return ConversionError(f"ExecuTorch {what} failed: {type(exc).__name__}: {exc}", cause="conversion-failed",
                           hint="torch.export must trace the model: see ExecuTorch's and torch.export's notes "
                                "on data-dependent control flow")


def export(model: Any, example_input: Any, out: Path) -> dict:
    """fp32: torch.export, XNNPACK lowering, the .pte at `out`."""
    import torch

    started = time.perf_counter()
    try:
        with torch.no_grad():
            program = torch.export.export(model.eval(), (example_input,))
        return _report(out, started, "fp32", _lower(program, out))
    except ConversionError:
        raise
    except Exception as exc:  # torch.export and the lowering raise whatever the graph makes them raise
        raise _failed("export", exc) from exc


def _is_relu6(node: Any) -> bool:
    """F.relu6 exports as aten.relu6, nn.ReLU6 as aten.hardtanh(x, 0, 6)."""
    import torch

    if node.op != "call_function":
        return False
    if node.target == torch.ops.aten.relu6.default:
        return True
    return (node.target == torch.ops.aten.hardtanh.default and tuple(node.args[1:3]) == (0.0, 6.0)
            and not (isinstance(node.args[0], torch.fx.Node) and node.args[0].target == torch.ops.aten.relu.default))


def split_relu6(graph: Any) -> int:
    """Rewrite each relu6(x) as hardtanh(relu(x), 0, 6), the same function; returns how many.

    XNNPACKQuantizer fuses conv(+bn)+relu but knows no relu6: unrewritten, each conv's output is quantized over
    its whole pre-clamp range. After the rewrite the conv's output is observed after the relu.
    """
    import torch

    count = 0
    for node in list(graph.graph.nodes):
        if not _is_relu6(node):
            continue
        with graph.graph.inserting_before(node):
            relu = graph.graph.call_function(torch.ops.aten.relu.default, (node.args[0],))
            clamp = graph.graph.call_function(torch.ops.aten.hardtanh.default, (relu, 0.0, 6.0))
        relu.meta, clamp.meta = dict(node.meta), dict(node.meta)
        node.replace_all_uses_with(clamp)
        graph.graph.erase_node(node)
        count += 1
    graph.graph.lint()
    graph.recompile()
    return count


_CONV2D_DEFAULTS = (None, None, None, [1, 1], [0, 0], [1, 1], 1)  # input, weight, bias, stride, padding, dilation, groups


def fold_pads(graph: Any) -> int:
    """Fold each zero pad that is the same on both sides of H and of W into the conv2d that alone reads it (the
    same function); returns how many. XNNPACKQuantizer leaves a pad unannotated, so in an int8 program it runs in
    float between a dequantize and a quantize (12 such pads cost EfficientNet-Lite0's int8 about 17%)."""
    import torch

    count = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.pad.default:
            continue
        pads = list(node.args[1])
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
        users = list(node.users)
        if (len(pads) != 4 or pads[0] != pads[1] or pads[2] != pads[3] or mode != "constant" or value not in (None, 0)
                or len(users) != 1 or users[0].target != torch.ops.aten.conv2d.default or users[0].args[0] is not node):
            continue
        conv = users[0]
        args = list(conv.args) + list(_CONV2D_DEFAULTS[len(conv.args):])
        args[0], args[4] = node.args[0], [args[4][0] + pads[2], args[4][1] + pads[0]]
        conv.args = tuple(args)
        graph.graph.erase_node(node)
        count += 1
    graph.graph.lint()
    graph.recompile()
    return count


def quantize_int8(model: Any, example_input: Any, calibration: np.ndarray, out: Path) -> dict:
    """Static int8 (PT2E, XNNPACKQuantizer, per-channel symmetric weights) calibrated on every sample of
    `calibration` (N, *input shape without its batch), lowered to XNNPACK, the .pte at `out`. The exported graph
    is first rewritten for the quantizer (split_relu6, fold_pads: exact rewrites)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    started = time.perf_counter()
    try:
        graph = torch.export.export(model.eval(), (example_input,)).module()
        rewritten = {"relu6_split": split_relu6(graph), "pads_folded": fold_pads(graph)}
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for sample in calibration:
                prepared(torch.from_numpy(np.ascontiguousarray(sample[None], dtype=np.float32)))
            converted = convert_pt2e(prepared)
            calibrated = round(time.perf_counter() - started, 2)
            program = torch.export.export(converted, (example_input,))
        facts = _lower(program, out)
    except ConversionError:
        raise
    except Exception as exc:  # as in export
        raise _failed("int8 quantization", exc) from exc
    return _report(out, started, "int8", {**facts, "calibration_samples": len(calibration),
                                          "calibration_seconds": calibrated, "rewritten": rewritten})
