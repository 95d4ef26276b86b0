"""Reduced-precision variants of an exported fp32 model.

- fp16 for GPUs: weights and activations in half precision, fp32 kept at the inputs and outputs so
  clients and the service's preprocessing do not change.
- int8 for CPUs: dynamic quantisation of MatMul/Gemm only. ConvNeXt's pointwise layers are Linear
  (MatMul), so that covers most of the weights; quantising the convolutions as well was measured
  2-3x *slower* than fp32 with ONNX Runtime on 2 cores (see BENCHMARKS.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import get_args

import onnx

from catalog.manifest import Precision

PRECISIONS: tuple[Precision, ...] = get_args(Precision)
INT8_OP_TYPES = ("MatMul", "Gemm")


class PrecisionError(ValueError):
    pass


def check_precision(precision: str) -> Precision:
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; allowed: {', '.join(map(repr, PRECISIONS))}")
    return precision


def convert(fp32_path: str | Path, target_path: str | Path, precision: Precision,
            int8_op_types: tuple[str, ...] = INT8_OP_TYPES, keep_fp32_scope: str | None = None) -> None:
    """Write ``target_path`` as the ``precision`` variant of the fp32 model at ``fp32_path``; nodes whose
    name contains ``keep_fp32_scope`` (the OOD detector's, whose distances a reduced precision would blur
    at no speed gain) stay in fp32."""
    source, target = Path(fp32_path), Path(target_path)
    if precision == "fp32":
        if source != target:
            target.write_bytes(source.read_bytes())
        return
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = onnx.load(str(source))
        half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False,
                                        node_block_list=scoped_nodes(model, keep_fp32_scope) or None)
        onnx.save(half, str(target))
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    excluded = scoped_nodes(onnx.load(str(source)), keep_fp32_scope)
    quantize_dynamic(str(source), str(target), op_types_to_quantize=list(int8_op_types),
                     weight_type=QuantType.QInt8, nodes_to_exclude=excluded)


def scoped_nodes(model: onnx.ModelProto, scope: str | None) -> list[str]:
    """Names of the graph's nodes exported from the module scope ``scope`` (e.g. ``/detector/``)."""
    return [node.name for node in model.graph.node if scope and scope in node.name]
