"""Small real models and helpers for the ONNX-hub tests (torch CNN, Keras CNN, cosine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_NCHW = [1, 3, 32, 32]


def small_cnn():
    """Conv-BN-ReLU6, depthwise conv, 1x1 conv, pool, linear: the op mix of mobile CNNs (seeded)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6(),
        nn.Conv2d(16, 24, 1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
    )
    with torch.no_grad():  # non-trivial BN statistics
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def images(n: int, seed: int = 0, shape: list[int] = INPUT_NCHW) -> np.ndarray:
    """(n, C, H, W) float32 samples without batch dim, roughly normalised image statistics."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, *shape[1:])).astype(np.float32)


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def keras_cnn():
    """A small NHWC Keras 3 CNN with fixed random weights."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(5)(x))
