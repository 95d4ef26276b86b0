"""fp32 vs int8 (and fp16) ONNX Runtime speed and agreement for a ConvNeXt attribute model on this CPU.

    python benchmarks/bench_precision.py [--backbone convnext-tiny] [--image-size 224] [--threads 2]

Exports one random-init category model (Men Tshirts heads) in each variant side by side and times them in
one run, so the ratios are comparable even when absolute times drift. int8 variants: dynamic quantisation
of MatMul/Gemm only (what `export --precision int8` writes) and of every supported op (convolutions too).
Argmax agreement is against fp32 on random-noise inputs run through the real preprocessing statistics.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from catalog.taxonomy import load_taxonomy
from export.onnx_graph import export_onnx
from export.precision import convert
from export.verify import compare
from model_training.backbone import build_backbone
from model_training.model import CategoryModel, value_orders_for


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def images_per_second(sess: ort.InferenceSession, batch: np.ndarray, seconds: float) -> float:
    sess.run(None, {"pixel_values": batch})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(None, {"pixel_values": batch})
        done += len(batch)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="convnext-tiny")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0, help="timing window per variant")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    category = load_taxonomy()["men_tshirts"]
    model = CategoryModel(build_backbone(args.backbone), value_orders_for(category)).eval()
    names = list(model.attribute_names)
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((args.batch_size, 3, args.image_size, args.image_size)).astype(np.float32)
    check = rng.standard_normal((64, 3, args.image_size, args.image_size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp32 = folder / "fp32.onnx"
        export_onnx(model, names, (3, args.image_size, args.image_size), fp32)
        variants = {"fp32": fp32}
        variants["int8 MatMul/Gemm"] = folder / "int8_matmul.onnx"
        convert(fp32, variants["int8 MatMul/Gemm"], "int8")
        variants["int8 all ops"] = folder / "int8_all.onnx"
        convert(fp32, variants["int8 all ops"], "int8", int8_op_types=("MatMul", "Gemm", "Conv"))
        variants["fp16 (on CPU)"] = folder / "fp16.onnx"
        convert(fp32, variants["fp16 (on CPU)"], "fp16")
        sessions = {name: session(path, args.threads) for name, path in variants.items()}
        reference = dict(zip(names, sessions["fp32"].run(names, {"pixel_values": check}), strict=True))
        rows = []
        for name, sess in sessions.items():
            outputs = dict(zip(names, sess.run(names, {"pixel_values": check}), strict=True))
            agreement = compare(reference, outputs).argmax_agreement
            speed = images_per_second(sess, batch, args.seconds)
            rows.append((name, speed, agreement, variants[name].stat().st_size / 1e6))
    base = rows[0][1]
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} ORT threads, "
          f"onnxruntime {ort.__version__}; {args.backbone} at {args.image_size}px, batch {args.batch_size}")
    print("| variant | images/s | vs fp32 | argmax agreement vs fp32 | file MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, speed, agreement, size in rows:
        print(f"| {name} | {speed:.1f} | {speed / base:.2f}x | {agreement:.4f} | {size:.1f} |")


if __name__ == "__main__":
    main()
