"""PyTorch's ExecuTorch: torch.export programs lowered to the XNNPACK delegate as .pte files, fp32 and PT2E int8,
run by ExecuTorch's own runtime. The x86-executorch target and its image lock live here: its images install
ExecuTorch beside the toolchain's torch, not in the toolchain image."""

from __future__ import annotations

from builder import formats
from builder.backends.executorch import runtime, steps  # noqa: F401  (they register themselves)

PACKAGES = ("executorch", "torchao")

formats.register(formats.Format("executorch", ".pte", runtime="executorch"))
