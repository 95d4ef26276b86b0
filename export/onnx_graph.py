"""PyTorch attribute model -> ONNX graph with a dynamic batch axis and one named output per attribute."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import onnx
import torch

INPUT_NAME = "pixel_values"
DEFAULT_OPSET = 18


class TupleOutputs(torch.nn.Module):
    """ONNX (and torch.export) outputs are positional: fix them to the manifest's attribute order."""

    def __init__(self, model: torch.nn.Module, attribute_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.attribute_names = list(attribute_names)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values)
        if isinstance(outputs, dict):
            return tuple(outputs[name] for name in self.attribute_names)
        return tuple(outputs)


@contextmanager
def unfused_attention() -> Iterator[None]:
    """``nn.MultiheadAttention`` (open_clip towers) without its eval-mode fused kernel, which has no ONNX
    symbolic; the unfused path computes the same attention from the same weights."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def export_onnx(
    model: torch.nn.Module,
    attribute_names: Sequence[str],
    input_shape: tuple[int, int, int],
    path: str | Path,
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Write a single-file ONNX model (weights inside) and return it after ``onnx.checker`` passes."""
    wrapper = TupleOutputs(model, attribute_names).eval()
    dummy = torch.zeros((2, *input_shape), dtype=torch.float32)
    dynamic_axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in attribute_names}}
    with warnings.catch_warnings(), torch.no_grad(), unfused_attention():
        # The TorchScript exporter writes one self-contained file in well under a second; the dynamo
        # exporter splits weights into an external-data file and takes ~10x longer for the same graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (dummy,), str(path), input_names=[INPUT_NAME], output_names=list(attribute_names),
            dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    return proto
