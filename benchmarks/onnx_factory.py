"""Tiny ONNX models and model repositories for tests and benchmarks, built with ``onnx.helper`` (no
torch): ``pixel_values [N,3,H,W] -> [Conv+Relu]* -> GlobalAveragePool -> Flatten -> one Gemm per
attribute`` with fixed random weights, and a manifest written with :class:`catalog.manifest.Manifest`.
With ``ood_threshold`` the model also outputs ``ood_score``, the squared norm of its pooled features.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from catalog.manifest import MANIFEST_NAME, MODEL_NAME, OOD_OUTPUT, Manifest, sha256_file
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy

INPUT_NAME = "pixel_values"


def build_model(slug: str, size: int = 32, *, seed: int = 0, conv_channels: Iterable[int] = (),
                batch: int | str = "batch", ood: bool = False) -> onnx.ModelProto:
    """A model whose outputs are named after the attributes (``logits_<name>``). ``conv_channels``
    adds stride-2 3x3 convolutions before pooling, to make the model as slow as a benchmark needs."""
    category = load_taxonomy().category(slug)
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    current, channels = INPUT_NAME, 3
    for i, width in enumerate(conv_channels):
        weight = rng.normal(0, (2.0 / (9 * channels)) ** 0.5, size=(width, channels, 3, 3)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"conv{i}_w"))
        nodes.append(helper.make_node("Conv", [current, f"conv{i}_w"], [f"conv{i}"], kernel_shape=[3, 3],
                                      strides=[2, 2], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
        current, channels = f"relu{i}", width
    nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    outputs = []
    for attribute in category.attributes:
        k = len(attribute.values)
        # Big weights so the logits are confidently different between images of different colours.
        weight = rng.normal(0, 3.0, size=(channels, k)).astype(np.float32)
        bias = rng.normal(0, 0.5, size=(k,)).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w_{attribute.name}"),
                         numpy_helper.from_array(bias, f"b_{attribute.name}")]
        output = f"logits_{attribute.name}"
        nodes.append(helper.make_node("Gemm", ["features", f"w_{attribute.name}", f"b_{attribute.name}"], [output]))
        outputs.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, k]))
    if ood:
        nodes.append(helper.make_node("ReduceSumSquare", ["features"], [OOD_OUTPUT], axes=[1], keepdims=0))
        outputs.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, [batch]))
    graph = helper.make_graph(
        nodes, f"{slug}_test",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, 3, size, size])],
        outputs, initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx_factory")
    model.ir_version = 8  # old enough for any onnxruntime the service supports
    onnx.checker.check_model(model)
    return model


def write_version(repository: Path, slug: str, version: int = 1, size: int = 32, *, seed: int = 0,
                  conv_channels: Iterable[int] = (), rules: list[dict[str, object]] | None = None,
                  batch: int | str = "batch", ood_threshold: float | None = None) -> Path:
    """Write ``repository/slug/version/{model.onnx,manifest.json}``; returns the version folder."""
    category = load_taxonomy().category(slug)
    folder = Path(repository) / slug / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(build_model(slug, size, seed=seed, conv_channels=tuple(conv_channels), batch=batch,
                          ood=ood_threshold is not None), folder / MODEL_NAME)
    manifest = Manifest.model_validate({
        "category": category.name,
        "slug": category.slug,
        "version": version,
        "attributes": [{"name": a.name, "column": a.column, "values": list(a.values),
                        "output": f"logits_{a.name}"} for a in category.attributes],
        "input": {"name": INPUT_NAME, "shape": [batch, 3, size, size], "dtype": "float32"},
        "preprocessing": PreprocessSpec(height=size, width=size).to_dict(),
        "rules": rules or [],
        "opset": 17,
        "sha256": sha256_file(folder / MODEL_NAME),
        "created_at": "2026-01-01T00:00:00Z",
        "source": {"note": "random weights from benchmarks/onnx_factory.py"},
        "ood": None if ood_threshold is None else {"method": "mahalanobis", "threshold": ood_threshold,
                                                   "false_alarm_rate": 0.05, "calibration_images": 1},
    })
    manifest.write(folder)
    assert (folder / MANIFEST_NAME).is_file()
    return folder


def build_repository(root: Path, slugs: Iterable[str] = ("men_tshirts",), size: int = 32,
                     versions: Iterable[int] = (1,), conv_channels: Iterable[int] = (),
                     ood_threshold: float | None = None) -> Path:
    """A repository with every slug at every version (different seeds per version)."""
    root = Path(root)
    for slug in slugs:
        for version in versions:
            write_version(root, slug, version, size, seed=version, conv_channels=conv_channels,
                          ood_threshold=ood_threshold)
    return root
