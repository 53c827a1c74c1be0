"""Tiny real models for the runtime, benchmark and metrics tests.

One small CNN (16x16x3 -> 4 logits) with fixed weights in every format:
TFLite fp32 and full-int8 with int8 or uint8 IO (from Keras), ONNX (NCHW,
written with onnx.helper, so no TensorFlow is needed) and OpenVINO IR
converted from that ONNX.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPE_NHWC = (1, 16, 16, 3)
RAPIDOCR_CLS = "rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx"


def calibration(n: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE_NHWC[1:]), dtype=np.float32)


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed weights for Conv2D(8, 3x3, same, relu) -> global average pool -> Dense(4)."""
    rng = np.random.default_rng(seed)
    return {
        "kernel": rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32),  # HWIO
        "bias": rng.normal(0, 0.1, 8).astype(np.float32),
        "fc_w": rng.normal(0, 0.5, (8, 4)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, 4).astype(np.float32),
    }


def keras_cnn(w: dict[str, np.ndarray]):
    import tensorflow as tf

    inp = tf.keras.Input(SHAPE_NHWC[1:], batch_size=1)
    conv = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")
    dense = tf.keras.layers.Dense(4)
    model = tf.keras.Model(inp, dense(tf.keras.layers.GlobalAveragePooling2D()(conv(inp))))
    conv.set_weights([w["kernel"], w["bias"]])
    dense.set_weights([w["fc_w"], w["fc_b"]])
    return model


def write_tflite(model, path: Path, io: str | None = None) -> Path:
    """fp32 when `io` is None, else full-int8 with `io` ("int8"/"uint8") input and output."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if io:
        data = calibration()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = getattr(tf, io)
    path.write_bytes(converter.convert())
    return path


def write_onnx(w: dict[str, np.ndarray], path: Path) -> Path:
    """The same CNN as an NCHW ONNX graph (no TensorFlow needed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(w["kernel"].transpose(3, 2, 0, 1).copy(), "conv_w"),  # HWIO -> OIHW
        numpy_helper.from_array(w["bias"], "conv_b"),
        numpy_helper.from_array(w["fc_w"], "fc_w"),
        numpy_helper.from_array(w["fc_b"], "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def write_openvino(source: Path, path: Path, input_shape: list[int] | None = None) -> Path:
    """OpenVINO IR (fp32 weights) converted from an ONNX file."""
    import openvino as ov

    model = ov.convert_model(str(source), input=[input_shape] if input_shape else None)
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def rapidocr_cls() -> Path:
    """The real MobileNetV3 text-direction classifier that rapidocr ships ([N,3,48,W] input)."""
    import rapidocr

    return Path(rapidocr.__file__).parent.parent / RAPIDOCR_CLS
