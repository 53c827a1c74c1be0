"""`source.onnx2tf`: onnx2tf's own conversion options, reachable from a recipe: convert.onnx2tf's params, and a
section of the recipe's source (registered below)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from builder.config.common import Strict
from builder.config.paths import FILE, loading, local_path
from builder.config.sections import Section, register

# onnx2tf 1.28 builds these ONNX ops from others TFLite has (its replace_to_pseudo_operators)
PseudoOp = Literal["Abs", "Acos", "Asin", "Atan", "Erf", "GatherND", "Gelu", "HardSwish", "LeakyRelu",
                   "MatMulInteger", "Neg", "PRelu", "Pow"]
PSEUDO_OPS: tuple[str, ...] = get_args(PseudoOp)
ONNX2TF_SOURCES = ("onnx", "pytorch_state_dict", "torchscript", "exported_program")  # what reaches TFLite via onnx2tf
_PARAM_TARGETS = ("attributes", "inputs", "outputs", "op")
MAX_PARAM_REPLACEMENT_BYTES = 1 << 20


def _pseudo_op(name: Any) -> Any:
    """onnx2tf's own spellings (PReLU, GeLU, Power) and any case, as the ONNX op name."""
    canonical = {op.lower(): op for op in PSEUDO_OPS} | {"power": "Pow"}
    return canonical.get(name.lower(), name) if isinstance(name, str) else name


def _param_replacements(operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, op in enumerate(operations):
        if not isinstance(op.get("op_name"), str) or op.get("param_target") not in _PARAM_TARGETS:
            raise ValueError(f"operations[{i}] needs op_name (a string) and param_target "
                             f"(one of {', '.join(_PARAM_TARGETS)}), as onnx2tf's parameter replacement reads them")
    return operations


class Onnx2tfOptions(Strict):
    """onnx2tf's own conversion options, by onnx2tf's names; convert.onnx2tf passes them on."""

    replace_to_pseudo_operators: list[Annotated[PseudoOp, BeforeValidator(_pseudo_op)]] = Field(
        [], description="ONNX ops onnx2tf builds from ops TFLite has (e.g. Erf, which TFLite lacks)")
    param_replacements: list[dict[str, Any]] = Field(
        [], description="onnx2tf parameter replacement operations ({op_name, param_target, param_name, values ...})")
    keep_ncw_or_nchw_or_ncdhw_input_names: list[str] = Field(
        [], description="inputs that keep their channels-first layout (default: made channels-last)")
    keep_nwc_or_nhwc_or_ndhwc_input_names: list[str] = Field([], description="inputs that are channels-last already")
    keep_shape_absolutely_input_names: list[str] = Field([], description="inputs whose shape onnx2tf never changes")
    disable_group_convolution: bool = Field(False, description="grouped convolutions as separable convolutions")
    enable_rnn_unroll: bool = Field(False, description="unroll LSTM/GRU/RNN loops: faster, more memory")
    enable_batchmatmul_unfold: bool = Field(False, description="BatchMatMul as one MatMul per batch")
    optimization_for_gpu_delegate: bool = Field(False, description="replace ops the TFLite GPU delegate lacks")

    _operations_valid = field_validator("param_replacements")(_param_replacements)


class Onnx2tfSource(Onnx2tfOptions):
    """`source.onnx2tf`: onnx2tf's options, and its parameter replacement file beside the recipe."""

    param_replacement_file: Path | None = Field(
        None, description="onnx2tf's parameter replacement JSON (its -prf); its operations join param_replacements")

    _file_exists = field_validator("param_replacement_file")(local_path(FILE))

    @field_validator("param_replacement_file")
    @classmethod
    def _readable_json(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None or not loading(info):
            return path
        if path.stat().st_size > MAX_PARAM_REPLACEMENT_BYTES:
            raise ValueError(f"{path} is larger than {MAX_PARAM_REPLACEMENT_BYTES >> 20} MiB")
        operations = _file_operations(path)
        if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
            raise ValueError(f"{path}: onnx2tf wants a JSON object with an `operations` list of objects")
        _param_replacements(operations)
        return path

    def step_params(self) -> dict[str, Any]:
        """convert.onnx2tf's params: the options set here, with the file's operations read in (for the plan)."""
        params = self.model_dump(mode="json", exclude_defaults=True, exclude={"param_replacement_file"})
        if self.param_replacement_file:
            params["param_replacements"] = self.param_replacements + _file_operations(self.param_replacement_file)
        return params


def _file_operations(path: Path) -> Any:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{path} is not UTF-8 JSON: {exc}") from None
    return data.get("operations") if isinstance(data, dict) else None


def _reads_it(source: Any, options: Onnx2tfSource) -> str | None:
    fmt = source.resolved_format
    if fmt not in ONNX2TF_SOURCES:
        return (f"onnx2tf never converts a {fmt} source (it reads {', '.join(ONNX2TF_SOURCES)} sources on their "
                "way to TFLite)")
    return None


register(Section("source", "onnx2tf", Onnx2tfSource, "onnx2tf's options for this model (ONNX and PyTorch "
                 "sources on TFLite targets)", optional=True, check=_reads_it))
