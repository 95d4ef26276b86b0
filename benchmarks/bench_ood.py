"""Out-of-distribution detectors compared (BENCHMARKS.md, "Unfamiliar images").

For every category's checkpoint: fit each method on the training images' pooled features, set its threshold
on the validation split (as training does), then measure on images the model never saw:

- false alarms: the share of the category's held-out test images flagged;
- (a) real photographs that Python packages ship (scikit-learn's china.jpg and flower.jpg, matplotlib's
  grace_hopper.jpg), each whole, mirrored and cropped (the crops add views, not new photographs);
- (b) the synthetic test images of the other four categories, sent under this category;
- (c) corrupted inputs: blank images, pure noise, and this category's test images under a heavy blur.

AUROC is against the category's held-out test images; detection is the share flagged at the threshold. With
``--repository`` the exported models' own ``ood_score`` outputs are measured too (ONNX Runtime, the manifest's
threshold): what the service computes.

    PYTHONPATH=. python benchmarks/bench_ood.py --runs build/demo/runs --data build/demo/catalog \\
        [--repository models/demo] [--methods composite mahalanobis knn energy] [--k 5]
    PYTHONPATH=. python benchmarks/bench_ood.py --runs - --data - --repository models/demo --graph-cost men_tshirts
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from catalog.dataset import read_labels, read_split
from catalog.manifest import OOD_OUTPUT, load_manifest, resolve_version
from catalog.preprocessing import PreprocessSpec, preprocess
from catalog.taxonomy import load_taxonomy
from model_training.checkpoint import find_checkpoint_dirs, load_checkpoint
from model_training.config import TrainConfig
from model_training.fit_ood import split_datasets
from model_training.ood import (
    OodDetector,
    OodFeatures,
    contrast_sets,
    fit_ood,
    ood_features,
    threshold_at,
)

SETS = ("test", "photos", "other_categories", "corrupted")


def package_photos() -> list[Path]:
    import matplotlib
    import sklearn

    return [Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
            Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
            Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]


def views(image: Image.Image) -> list[Image.Image]:
    """The photo, mirrored, four corner crops and a centre crop (each 60 % of a side), and a portrait crop."""
    w, h = image.size
    cw, ch = int(w * 0.6), int(h * 0.6)
    boxes = [(0, 0, cw, ch), (w - cw, 0, w, ch), (0, h - ch, cw, h), (w - cw, h - ch, w, h),
             ((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2), ((w - h // 2) // 2, 0, (w + h // 2) // 2, h)]
    return [image, ImageOps.mirror(image), *(image.crop(box) for box in boxes)]


def corrupted(test_images: list[Image.Image], seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    blank = [Image.new("RGB", (512, 640), tuple(int(c) for c in colour))
             for colour in ((255, 255, 255), (0, 0, 0), (128, 128, 128), *rng.integers(0, 256, (7, 3)))]
    noise = [Image.fromarray(rng.integers(0, 256, (640, 512, 3), dtype=np.uint8)) for _ in range(10)]
    blurred = [image.filter(ImageFilter.GaussianBlur(12)) for image in test_images[:20]]
    return blank + noise + blurred


def load_images(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def image_sets(data: Path, category: str) -> dict[str, list[Image.Image]]:
    rows = read_labels(data / "test_truth.csv", data / "test_images")
    own = load_images([r.image_path for r in rows if r.category == category and r.image_path])
    others = load_images([r.image_path for r in rows if r.category != category and r.image_path])
    photos = [view for photo in load_images(package_photos()) for view in views(photo)]
    return {"test": own, "photos": photos, "other_categories": others, "corrupted": corrupted(own)}


def batch(images: list[Image.Image], spec: PreprocessSpec) -> torch.Tensor:
    return torch.from_numpy(np.stack([preprocess(image, spec) for image in images]))


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an outside image scores above an inside one), ties counted half (Mann-Whitney)."""
    above = (outside[:, None] > inside[None, :]).mean()
    ties = (outside[:, None] == inside[None, :]).mean()
    return float(above + ties / 2)


def summary(scores: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    out = {"false_alarms": float((scores["test"] > threshold).mean())}
    for name in SETS[1:]:
        out[f"{name}_auroc"] = auroc(scores["test"], scores[name])
        out[f"{name}_detected"] = float((scores[name] > threshold).mean())
    return out


def torch_scores(run: Path, data: Path, sets: dict[str, list[Image.Image]], methods: list[str],
                 k: int, rate: float) -> dict[str, dict[str, float]]:
    model, info = load_checkpoint(run)
    train_set, val_set = split_datasets(info, data)
    cpu = torch.device("cpu")

    def features(dataset: Any) -> OodFeatures:
        return ood_features(model, torch.utils.data.DataLoader(dataset, batch_size=64), cpu)

    train, val = features(train_set), features(val_set)
    others = contrast_sets(read_split(data, "train", load_taxonomy()), info.category, info.preprocessing,
                           TrainConfig().ood_contrast_per_category, TrainConfig().seed)
    contrast = [features(group).pooled for group in others]
    measured = {name: features(list(zip(batch(images, info.preprocessing), strict=False)))
                for name, images in sets.items()}
    results = {}
    for method in methods:
        fitted = fit_ood(method, train, val, rate, k=k, contrast=contrast)
        with torch.no_grad():
            scores = {name: fitted.detector.score(f.pooled, f.logits, f.input_stats).numpy()
                      for name, f in measured.items()}
        results[method] = {**summary(scores, fitted.threshold), "threshold": fitted.threshold,
                           "validation_images": fitted.calibration_images}
        if method == "composite":
            results.update(single_checks(fitted.detector, val, measured, rate))
    return results


def single_checks(detector: OodDetector, val: OodFeatures, measured: dict[str, OodFeatures],
                  rate: float) -> dict[str, dict[str, float]]:
    """Each of the composite's checks alone, its threshold set on the validation split like the composite's."""
    def standardised(f: OodFeatures) -> np.ndarray:
        with torch.no_grad():
            assert f.input_stats is not None
            return ((detector.raw_checks(f.pooled, f.input_stats) - detector.centre) / detector.spread).numpy()

    held_out = standardised(val)
    per_set = {name: standardised(f) for name, f in measured.items()}
    results = {}
    for i, check in enumerate(detector.checks):
        threshold = threshold_at(held_out[:, i], rate)
        results[f"composite: {check} check alone"] = {
            **summary({name: values[:, i] for name, values in per_set.items()}, threshold), "threshold": threshold}
    return results


def exported_scores(repository: Path, slug: str, sets: dict[str, list[Image.Image]]) -> dict[str, float]:
    import onnxruntime as ort

    folder = resolve_version(repository, slug)
    manifest = load_manifest(folder)
    assert manifest.ood is not None, f"{folder}: no OOD detector"
    session = ort.InferenceSession(str(folder / manifest.model_file), providers=["CPUExecutionProvider"])
    spec = manifest.preprocess_spec()
    scores = {name: session.run([manifest.ood.output], {manifest.input.name: batch(images, spec).numpy()})[0]
              for name, images in sets.items()}
    return {**summary(scores, manifest.ood.threshold), "threshold": manifest.ood.threshold}


def graph_cost(repository: Path, slug: str, runs: int = 40, batch_size: int = 16) -> dict[str, float]:
    """What the score costs inside the graph: ``session.run`` on one batch with and without the OOD output
    among the requested outputs (ONNX Runtime computes only what is asked), alternated, medians per image."""
    import time

    import onnxruntime as ort

    folder = resolve_version(repository, slug)
    manifest = load_manifest(folder)
    assert manifest.ood is not None, f"{folder}: no OOD detector"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(folder / manifest.model_file), options, providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).standard_normal((batch_size, *manifest.preprocess_spec().input_shape))
    feed = {manifest.input.name: pixels.astype(np.float32)}
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(runs):
        for name, outputs in (("without", manifest.output_names), ("with", [*manifest.output_names, OOD_OUTPUT])):
            start = time.perf_counter()
            session.run(outputs, feed)
            times[name].append((time.perf_counter() - start) * 1000 / batch_size)
    return {name: float(np.median(values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--repository", type=Path, default=None)
    parser.add_argument("--methods", nargs="+", default=["composite", "mahalanobis", "knn", "energy"])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--false-alarm-rate", type=float, default=0.05)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--graph-cost", metavar="SLUG", default=None,
                        help="only measure what the score costs in the repository's graph for this model")
    args = parser.parse_args()
    if args.graph_cost:
        cost = graph_cost(args.repository, args.graph_cost)
        print(f"{args.graph_cost}: ms per image at batch 16, without / with {OOD_OUTPUT}: {cost['without']:.3f} / "
              f"{cost['with']:.3f} (+{cost['with'] - cost['without']:.3f})")
        return
    torch.set_num_threads(2)
    per_category: dict[str, dict[str, dict[str, float]]] = {}
    for run in find_checkpoint_dirs(args.runs):
        info_category = load_checkpoint(run)[1].category
        sets = image_sets(args.data, info_category)
        results = torch_scores(run, args.data, sets, args.methods, args.k, args.false_alarm_rate)
        if args.repository is not None:
            results["exported"] = exported_scores(args.repository, run.name, sets)
        per_category[run.name] = results
        print(run.name, {name: len(images) for name, images in sets.items()}, flush=True)
    print_tables(per_category)
    if args.json:
        args.json.write_text(json.dumps(per_category, indent=2) + "\n", encoding="utf-8")


def print_tables(per_category: dict[str, dict[str, dict[str, float]]]) -> None:
    columns = ["false_alarms", *(f"{s}_{m}" for s in SETS[1:] for m in ("auroc", "detected"))]
    methods = list(next(iter(per_category.values())))
    print("\n| method | " + " | ".join(columns) + " |\n|" + " --- |" * (len(columns) + 1))
    for method in methods:
        means = [np.mean([r[method][c] for r in per_category.values()]) for c in columns]
        print(f"| {method} (mean of {len(per_category)}) | " + " | ".join(f"{v:.3f}" for v in means) + " |")
    for method in methods:
        header = "| category | " + " | ".join(columns) + " |\n|" + " --- |" * (len(columns) + 1)
        print(f"\n{method}, per category:\n\n{header}")
        for slug, results in per_category.items():
            print(f"| {slug} | " + " | ".join(f"{results[method][c]:.3f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
