"""The ExecuTorch backend (builder/backends/executorch/): a real torch CNN exported to .pte in fp32 and PT2E int8
with the XNNPACK delegate, loaded and run by ExecuTorch's own runtime through the runtime registry."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_models import INPUT_NCHW, cosine, images, small_cnn

from builder import formats, runtimes
from builder.backends.executorch import export

pytest.importorskip("executorch")


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("pte")
    model, example = small_cnn(), torch.zeros(INPUT_NCHW)
    fp32 = export.export(model, example, folder / "cnn_fp32.pte")
    int8 = export.quantize_int8(model, example, images(32), folder / "cnn_int8.pte")
    return model, folder, fp32, int8


def test_both_programs_are_written_whole_and_delegated_to_xnnpack(programs):
    _, folder, fp32, int8 = programs
    for report, name in ((fp32, "cnn_fp32.pte"), (int8, "cnn_int8.pte")):
        assert report["size"] == (folder / name).stat().st_size and report["delegated_partitions"] >= 1
        assert report["converter"].startswith("executorch ") and "torch 2.13" in report["converter"]
    assert int8["precision"] == "int8" and int8["calibration_samples"] == 32
    assert int8["rewritten"] == {"relu6_split": 2, "pads_folded": 0}  # nn.ReLU6 twice, pads already in the convs


def test_the_runtime_registry_runs_them_and_they_agree_with_torch(programs):
    import torch

    model, folder, _, _ = programs
    assert formats.of_file("cnn_fp32.pte").runtime == "executorch"
    x = images(8, seed=1)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for name, floor in (("cnn_fp32.pte", 0.9999), ("cnn_int8.pte", 0.98)):
        session = runtimes.load(folder / name, threads=1)
        assert [i.shape for i in session.inputs] == [tuple(INPUT_NCHW)] and session.threads == 1
        got = np.concatenate([session.run([s[None]])[0] for s in x])
        assert cosine(got, expected) > floor, name
        session.prepared([x[:1]])()  # what the benchmark times
