"""What LiteRT adds on the host: `builder import` of a mirror list of .tflite models (seed 000's): each model's
input read from its flatbuffer."""

from __future__ import annotations

import struct

from builder.host import importer


def input_tensor(model: bytes) -> importer.InputTensor:
    """The one input tensor of a .tflite model; ValueError if the file is not one, or is damaged."""
    from ai_edge_litert import schema_py_generated as schema

    if len(model) < 8 or not schema.Model.ModelBufferHasIdentifier(model, 0):
        raise ValueError("the file is not a .tflite model (no TFL3 identifier)")
    try:  # flatbuffers reads offsets as it goes: a damaged file fails anywhere in here
        graph = schema.Model.GetRootAs(model, 0).Subgraphs(0)
        if graph is None or graph.InputsLength() != 1:
            raise ValueError(f"the model has {graph.InputsLength() if graph else 0} inputs; an imported recipe takes one")
        tensor = graph.Tensors(graph.Inputs(0))
        shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
        sizes = [int(d) for d in tensor.ShapeSignatureAsNumpy()] if tensor.ShapeSignatureLength() else shape
        dtype = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}[tensor.Type()]
        quant = tensor.Quantization()
        scale = float(quant.ScaleAsNumpy()[0]) if quant and quant.ScaleLength() == 1 else None
        zero = int(quant.ZeroPointAsNumpy()[0]) if scale and quant.ZeroPointLength() else 0
        return importer.InputTensor(tensor.Name().decode(), shape, sizes, dtype, scale, zero)
    except (IndexError, KeyError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"the .tflite file is damaged ({type(exc).__name__}: {exc})") from None


def input_spec(model: bytes) -> importer.Spec:
    """The input spec of a .tflite image model, from its one input tensor; ValueError if it has none we can use."""
    return importer.image_spec(input_tensor(model))


importer.register_reader("tflite", input_tensor)
