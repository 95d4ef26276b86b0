"""PyTorch attribute model -> ``torch.export`` program (``model.pt2``) with a dynamic batch axis, for the
service's PyTorch backend on hosts without ``onnxruntime-gpu``. Its outputs are positional, in the manifest's
order, like the ONNX graph's."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from export.onnx_graph import INPUT_NAME, TupleOutputs

MAX_BATCH = 1024
"""The batch axis is exported as dynamic in 1..this (the service's ``max_batch_size`` is at most 1024)."""


def export_program(model: torch.nn.Module, output_names: Sequence[str], input_shape: tuple[int, int, int],
                   path: str | Path) -> Path:
    """Trace ``model`` (fp32, eval) with ``torch.export`` and save it; returns ``path``."""
    wrapper = TupleOutputs(model, output_names).eval()
    # Traced at 2 (not 1): an example size of 0 or 1 would be specialised into the graph.
    example = torch.zeros((2, *input_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        program = torch.export.export(wrapper, (example,), dynamic_shapes={INPUT_NAME: {0: batch}})
    torch.export.save(program, str(path))
    return Path(path)


def load_program(path: str | Path) -> torch.nn.Module:
    """A saved program as a callable module: ``module(pixels) -> tuple of outputs``."""
    return torch.export.load(str(path)).module()
