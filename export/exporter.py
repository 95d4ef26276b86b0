"""Checkpoint -> verified ONNX model version in a model repository."""

from __future__ import annotations

import logging
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from catalog.dataset import LabelRow, read_labels
from catalog.manifest import MODEL_NAME, OOD_OUTPUT, TORCH_EXPORT_NAME, Manifest, OodSpec, load_manifest, sha256_file
from catalog.preprocessing import PreprocessSpec, preprocess
from catalog.reference import REFERENCE_KEY, TOLERANCES, compare_reference, record, recorded, reference_batch
from catalog.taxonomy import Category, Taxonomy, load_taxonomy
from export import DEFAULT_MAX_SCORE_DROP_POINTS
from export.onnx_graph import DEFAULT_OPSET, INPUT_NAME, export_onnx
from export.precision import Precision, check_precision, convert
from export.repository import next_version, staged_version
from export.verify import (
    FP32_MAX_ABS_DIFF,
    OOD_FP32_MAX_DIFF,
    OOD_MAX_FLAG_DISAGREEMENT,
    compare,
    compare_ood,
    competition_score,
    onnx_session,
    run_onnx,
    run_torch,
)
from model_training.checkpoint import CheckpointError, CheckpointInfo
from model_training.ensemble import LoadedPredictor, load_predictor

log = logging.getLogger("export")
DETECTOR_SCOPE = "/detector/"
"""The OOD detector's node names in the exported graph (``model_training.ood.Scored.detector``): kept fp32."""



class ExportError(RuntimeError):
    """An export that was refused: the checkpoint does not fit, or verification failed."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: Manifest


def check_checkpoint_taxonomy(info: CheckpointInfo, taxonomy: Taxonomy) -> None:
    """The checkpoint's heads must cover exactly the category's attributes and values."""
    category = taxonomy.category(info.category)
    if list(info.value_orders) != list(category.attribute_names):
        raise ExportError(
            f"checkpoint for {category.name!r} has heads {list(info.value_orders)}; the taxonomy's attributes "
            f"are {list(category.attribute_names)}"
        )
    for attribute in category.attributes:
        values = info.value_orders[attribute.name]
        if sorted(values) != sorted(attribute.values):
            raise ExportError(
                f"checkpoint head {attribute.name!r} predicts {list(values)}; the taxonomy allows "
                f"{list(attribute.values)}"
            )


def validation_rows(data_dir: str | Path, category: str, limit: int, seed: int = 0) -> list[LabelRow]:
    """Labelled images of one category: the held-out split when an answer key exists, else train."""
    root = Path(data_dir)
    if (root / "test_truth.csv").is_file():
        rows = read_labels(root / "test_truth.csv", root / "test_images")
    else:
        rows = read_labels(root / "train.csv", root / "train_images")
    rows = [r for r in rows if r.category == category]
    if not rows:
        raise ExportError(f"{root}: no labelled images of {category!r} to verify the export on")
    return random.Random(seed).sample(rows, min(limit, len(rows)))


def load_batch(rows: list[LabelRow], spec: PreprocessSpec) -> np.ndarray:
    arrays = []
    for row in rows:
        assert row.image_path is not None
        with Image.open(row.image_path) as image:
            arrays.append(preprocess(image, spec))
    return np.stack(arrays)


def random_batch(spec: PreprocessSpec, n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *spec.input_shape)).astype(np.float32)


def _display_path(path: str | Path) -> str:
    """Relative to the working directory when inside it, so manifests do not carry a machine's layout."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def library_versions() -> dict[str, str]:
    found = {}
    for package in ("torch", "transformers", "onnx", "onnxruntime", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def export_checkpoint(
    checkpoint: str | Path | Sequence[str | Path],
    repository: str | Path,
    *,
    version_number: int | None = None,
    precision: str = "fp32",
    validation_data: str | Path | None = None,
    validation_images: int = 64,
    max_score_drop_points: float = DEFAULT_MAX_SCORE_DROP_POINTS,
    force: bool = False,
    opset: int = DEFAULT_OPSET,
    tta_flip: bool = False,
    torch_export: bool = False,
) -> ExportResult:
    """Export, verify and publish one checkpoint, or an ensemble of several of one category (one ONNX model
    holding every member), as ``repository/<slug>/<version>``; ``tta_flip`` puts flip averaging in the graph.
    ``torch_export`` also writes a verified ``torch.export`` program (``model.pt2``) for the PyTorch backend."""
    chosen: Precision = check_precision(precision)
    taxonomy = load_taxonomy()
    paths = [checkpoint] if isinstance(checkpoint, str | Path) else list(checkpoint)
    try:
        loaded = load_predictor(paths, tta_flip=tta_flip)
    except CheckpointError as error:
        raise ExportError(str(error)) from None
    model, info = loaded.model, loaded.info
    check_checkpoint_taxonomy(info, taxonomy)
    category = taxonomy.category(info.category)
    names = list(info.attribute_names)
    outputs = [*names, OOD_OUTPUT] if info.ood else names
    if loaded.ood_note:
        log.warning("%s: %s", category.slug, loaded.ood_note)
    rows, batch = verification_inputs(info.preprocessing, category.name, validation_data, validation_images)
    reference = run_torch(model, batch, outputs)

    version_number = version_number or next_version(repository, category.slug)
    with tempfile.TemporaryDirectory() as scratch, staged_version(repository, category.slug, version_number) as stage:
        fp32_path = Path(scratch) / "model.fp32.onnx"
        export_onnx(model, outputs, info.preprocessing.input_shape, fp32_path, opset)
        verification: dict[str, Any] = {"fp32": verify_fp32(fp32_path, reference, batch, info),
                                        "images": len(batch),
                                        "image_source": str(validation_data) if rows else "random",
                                        **({"ood": {"omitted": loaded.ood_note}} if loaded.ood_note else {}),
                                        REFERENCE_KEY: record(run_torch(model, reference_batch(info.preprocessing),
                                                                        outputs))}
        model_path = stage / MODEL_NAME
        convert(fp32_path, model_path, chosen, keep_fp32_scope=DETECTOR_SCOPE)
        if chosen != "fp32":
            verification.update(verify_reduced(model_path, chosen, info, reference, batch, rows,
                                               max_score_drop_points, force))
        program = write_torch_program(model, outputs, info, stage, verification) if torch_export else None
        manifest = build_manifest(loaded, category, version_number, chosen, opset, model_path, verification,
                                  paths, program)
        manifest.write(stage)
        load_manifest(stage)
    final = Path(repository) / category.slug / str(version_number)
    return ExportResult(final, load_manifest(final))


def verification_inputs(spec: PreprocessSpec, category_name: str, validation_data: str | Path | None,
                        validation_images: int) -> tuple[list[LabelRow], np.ndarray]:
    """Labelled validation rows and their preprocessed batch; random inputs (and no rows) without data."""
    if validation_data is None:
        log.warning("no --validation-data: parity is checked on random inputs and no score drop is measured")
        return [], random_batch(spec)
    rows = validation_rows(validation_data, category_name, validation_images)
    return rows, load_batch(rows, spec)


def verify_fp32(fp32_path: Path, reference: dict[str, np.ndarray], batch: np.ndarray,
                info: CheckpointInfo) -> dict[str, Any]:
    """The fp32 ONNX model must reproduce PyTorch's logits and OOD score; its parity numbers for the manifest."""
    names = list(info.attribute_names)
    outputs = run_onnx(onnx_session(fp32_path), batch, list(reference))
    fp32 = compare({n: reference[n] for n in names}, outputs)
    if fp32.max_abs_diff > FP32_MAX_ABS_DIFF or fp32.argmax_agreement < 1.0:
        raise ExportError(
            f"fp32 ONNX does not match PyTorch: max |logit diff| {fp32.max_abs_diff:.3g} (limit "
            f"{FP32_MAX_ABS_DIFF}), argmax agreement {fp32.argmax_agreement:.4f} (must be 1.0)"
        )
    if not info.ood:
        return fp32.to_dict()
    ood = compare_ood(reference[OOD_OUTPUT], outputs[OOD_OUTPUT], float(info.ood["threshold"]))
    if ood.max_diff_over_threshold > OOD_FP32_MAX_DIFF or ood.flag_agreement < 1.0:
        raise ExportError(
            f"fp32 ONNX OOD score does not match PyTorch: max |diff| {ood.max_diff_over_threshold:.3g} of the "
            f"threshold (limit {OOD_FP32_MAX_DIFF}), flag agreement {ood.flag_agreement:.4f} (must be 1.0)"
        )
    return {**fp32.to_dict(), "ood": ood.to_dict()}


def verify_reduced(model_path: Path, precision: Precision, info: CheckpointInfo, reference: dict[str, np.ndarray],
                   batch: np.ndarray, rows: list[LabelRow], max_score_drop_points: float,
                   force: bool) -> dict[str, Any]:
    """Parity of a reduced-precision model and, on labelled rows, the competition score it costs (refused
    above ``max_score_drop_points`` unless forced)."""
    names = list(info.attribute_names)
    logits = run_onnx(onnx_session(model_path), batch, list(reference))
    verification: dict[str, Any] = {precision: compare({n: reference[n] for n in names}, logits).to_dict()}
    if info.ood:
        ood = compare_ood(reference[OOD_OUTPUT], logits[OOD_OUTPUT], float(info.ood["threshold"]))
        verification[precision]["ood"] = ood.to_dict()
        if 1 - ood.flag_agreement > OOD_MAX_FLAG_DISAGREEMENT and not force:
            raise ExportError(f"{precision} changes the OOD flag of {1 - ood.flag_agreement:.1%} of {len(batch)} "
                              f"validation images (limit {OOD_MAX_FLAG_DISAGREEMENT:.0%}); pass --force to export "
                              "anyway")
    if not rows:
        return verification
    decoder = info.decoder()
    base = competition_score(decoder, reference, rows)
    reduced = competition_score(decoder, logits, rows)
    drop_points = (base - reduced) * 100
    verification["score"] = {"fp32": base, precision: reduced, "drop_points": drop_points,
                             "max_drop_points": max_score_drop_points, "forced": force}
    if drop_points > max_score_drop_points and not force:
        raise ExportError(
            f"{precision} costs {drop_points:.2f} points of competition score on {len(rows)} validation "
            f"images (limit {max_score_drop_points}); pass --force to export anyway"
        )
    return verification


def build_manifest(loaded: LoadedPredictor, category: Category, version_number: int, precision: Precision,
                   opset: int, model_path: Path, verification: dict[str, Any],
                   checkpoints: Sequence[str | Path], torch_program: dict[str, str] | None = None) -> Manifest:
    """The manifest of an exported, verified model: everything the service needs to serve it."""
    info = loaded.info
    names = list(info.attribute_names)
    shown = [_display_path(path) for path in checkpoints]
    members = [{**m.to_dict(), "checkpoint": path} for m, path in zip(loaded.members, shown, strict=True)] \
        if loaded.members else None
    spec = info.preprocessing
    return Manifest.model_validate(dict(
        category=category.name,
        slug=category.slug,
        version=version_number,
        attributes=[{"name": n, "column": category.attribute(n).column, "values": list(info.value_orders[n]),
                     "output": n} for n in names],
        input={"name": INPUT_NAME, "shape": ["batch", *spec.input_shape], "dtype": "float32"},
        preprocessing=spec.to_dict(),
        calibration={n: c.to_dict() for n, c in info.calibration.items()},
        rules=[r.to_dict() for r in info.rules],
        precision=precision,
        opset=opset,
        sha256=sha256_file(model_path),
        source={"checkpoint": shown[0] if len(shown) == 1 else shown, "validation_metrics": info.metrics,
                "git_commit": info.git_commit, "backbone": info.backbone.get("name"), "tta": loaded.tta},
        verification=verification,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        library_versions=library_versions(),
        members=members,
        ood={key: value for key, value in info.ood.items() if key in OodSpec.model_fields} if info.ood else None,
        torch_export=torch_program,
    ))


def write_torch_program(model: torch.nn.Module, outputs: list[str], info: CheckpointInfo, stage: Path,
                        verification: dict[str, Any]) -> dict[str, str]:
    """Write ``model.pt2``, prove it reproduces the recorded reference outputs (fp32 tolerance), and return
    its manifest entry; adds its parity to ``verification``."""
    from export.torch_program import export_program, load_program

    path = export_program(model, outputs, info.preprocessing.input_shape, stage / TORCH_EXPORT_NAME)
    expected = recorded(verification)
    assert expected is not None
    candidate = run_torch(load_program(path), reference_batch(info.preprocessing), outputs)
    threshold = float(info.ood["threshold"]) if info.ood else 1.0
    problems = compare_reference(expected, candidate, TOLERANCES["fp32"], (OOD_OUTPUT, threshold))
    if problems:
        raise ExportError(f"the torch.export program does not reproduce the checkpoint: {'; '.join(problems)}")
    verification["torch_export"] = {"max_abs_diff": max(float(np.abs(expected[n] - candidate[n]).max())
                                                        for n in expected)}
    return {"file": TORCH_EXPORT_NAME, "sha256": sha256_file(path), "torch_version": torch.__version__}
