"""The out-of-distribution detector: fitting, its threshold's false-alarm rate, storage with the checkpoint,
and the exported graph's score against PyTorch's."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from catalog.dataset import LabelRow
from catalog.manifest import OOD_OUTPUT, load_manifest
from catalog.preprocessing import PreprocessSpec
from catalog.taxonomy import load_taxonomy
from export.exporter import export_checkpoint
from model_training.backbone import build_backbone
from model_training.checkpoint import CheckpointError, make_info, read_info, save_checkpoint
from model_training.data import ImageDataset
from model_training.ensemble import load_predictor
from model_training.model import CategoryModel, value_orders_for
from model_training.ood import (
    OOD_WEIGHTS_NAME,
    FittedOod,
    OodDetector,
    OodFeatures,
    Scored,
    contrast_sets,
    fit_composite,
    fit_detector,
    fit_ood,
    input_statistics,
    load_ood,
    save_ood,
    threshold_at,
)

MEN = load_taxonomy()["men_tshirts"]
SPEC = PreprocessSpec(height=32, width=32)


def gaussian(n: int, dim: int = 16, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.2, 3.0, dim)
    return torch.randn(n, dim, generator=generator) * scales + shift


@pytest.mark.parametrize("method", ["mahalanobis", "knn"])
def test_threshold_flags_its_false_alarm_rate_of_a_held_out_split_and_most_far_images(method):
    train, val, held_out = gaussian(2000, seed=1), gaussian(2000, seed=2), gaussian(4000, seed=3)
    fitted = fit_ood(method, OodFeatures(train), OodFeatures(val), 0.05, k=5)
    with torch.no_grad():
        false_alarms = float((fitted.detector(held_out, {}) > fitted.threshold).float().mean())
        detected = float((fitted.detector(gaussian(500, shift=8.0, seed=4), {}) > fitted.threshold).float().mean())
    assert 0.035 <= false_alarms <= 0.065
    assert detected > 0.9
    assert fitted.calibration_images == 2000


def test_mahalanobis_score_is_the_squared_distance_under_the_shrunk_covariance():
    train = gaussian(500, dim=6, seed=5)
    detector = fit_detector("mahalanobis", train)
    x = gaussian(7, dim=6, seed=6)
    centred = train.double() - train.double().mean(0)
    covariance = centred.T @ centred / (len(train) - 1)
    shrunk = 0.9 * covariance + 0.1 * covariance.diagonal().mean() * torch.eye(6, dtype=torch.float64)
    d = x.double() - train.double().mean(0)
    expected = torch.einsum("ni,ij,nj->n", d, torch.linalg.inv(shrunk), d)
    with torch.no_grad():
        assert torch.allclose(detector(x, {}).double(), expected, rtol=1e-4)


def test_knn_score_is_the_cosine_distance_to_the_kth_neighbour():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    detector = fit_detector("knn", bank, k=2)
    with torch.no_grad():
        score = detector(torch.tensor([[2.0, 0.0]]), {})
    assert score.item() == pytest.approx(1.0)  # 1st neighbour at distance 0, 2nd at 90 degrees


def test_energy_score_is_minus_the_mean_logsumexp():
    detector = fit_detector("energy", torch.zeros(3, 2))
    logits = {"a": torch.tensor([[0.0, 0.0]]), "b": torch.tensor([[10.0, 0.0]])}
    expected = -(np.log(2) + np.logaddexp(10, 0)) / 2
    with torch.no_grad():
        assert detector(torch.zeros(1, 2), logits).item() == pytest.approx(expected, rel=1e-5)


def test_threshold_refuses_nonsense():
    with pytest.raises(ValueError, match="between 0 and 1"):
        threshold_at(np.ones(3), 1.0)
    with pytest.raises(ValueError, match="no held-out"):
        threshold_at(np.ones(0), 0.05)
    with pytest.raises(ValueError, match="unknown OOD method"):
        OodDetector("softmax", {})


def seen_through(model, pixels):
    with torch.no_grad():
        features = model.features(pixels)
        return OodFeatures(model.pooled(features), model.forward_heads(features), input_statistics(pixels))


def trained_checkpoint(folder, method="mahalanobis"):
    torch.manual_seed(0)
    model = CategoryModel(build_backbone("convnext-test"), value_orders_for(MEN), head_hidden=16).eval()
    contrast = [seen_through(model, torch.randn(30, 3, 32, 32) * 0.5 + 1.0).pooled]
    fitted = fit_ood(method, seen_through(model, torch.randn(64, 3, 32, 32)),
                     seen_through(model, torch.randn(20, 3, 32, 32)), 0.1, contrast=contrast)
    info = make_info(model, MEN, SPEC, "convnext-test", ood=save_ood(folder, fitted))
    return save_checkpoint(folder, model, info), fitted


def test_detector_is_stored_with_the_checkpoint_and_loads_back(tmp_path):
    run, fitted = trained_checkpoint(tmp_path / "run")
    info = read_info(run)
    assert info.ood["method"] == "mahalanobis" and info.ood["threshold"] == fitted.threshold
    assert info.ood["false_alarm_rate"] == 0.1 and info.ood["calibration_images"] == 20
    loaded = load_ood(run, info.ood)
    for name, buffer in fitted.detector.stats().items():
        assert torch.equal(loaded.stats()[name], buffer)
    predictor = load_predictor([run])
    assert isinstance(predictor.model, Scored)
    (run / OOD_WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="statistics are missing"):
        load_predictor([run])


def test_a_checkpoint_without_a_detector_keeps_loading_without_a_score(tmp_path):
    torch.manual_seed(0)
    model = CategoryModel(build_backbone("convnext-test"), value_orders_for(MEN), head_hidden=16).eval()
    run = save_checkpoint(tmp_path / "run", model, make_info(model, MEN, SPEC, "convnext-test"))
    assert "ood" not in json.loads((run / "checkpoint.json").read_text())
    predictor = load_predictor([run])
    assert predictor.info.ood is None
    with torch.no_grad():
        assert OOD_OUTPUT not in predictor.model(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("method", ["composite", "mahalanobis", "knn", "energy"])
def test_exported_graph_computes_the_pytorch_score(tmp_path, method):
    run, fitted = trained_checkpoint(tmp_path / "run", method)
    result = export_checkpoint(run, tmp_path / "repo")
    manifest = load_manifest(result.path)
    assert manifest.ood is not None and manifest.ood.method == method
    assert manifest.ood.threshold == fitted.threshold and manifest.ood.output == OOD_OUTPUT
    assert manifest.verification["fp32"]["ood"]["flag_agreement"] == 1.0
    session = ort.InferenceSession(str(result.path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((5, 3, 32, 32)).astype(np.float32)
    (score,) = session.run([OOD_OUTPUT], {"pixel_values": x})
    model = load_predictor([run]).model
    with torch.no_grad():
        expected = model(torch.from_numpy(x))[OOD_OUTPUT].numpy()
    assert score.shape == (5,)
    np.testing.assert_allclose(score, expected, rtol=1e-4, atol=1e-5 * abs(fitted.threshold))


@pytest.mark.parametrize("method", ["composite", "mahalanobis"])
def test_int8_export_keeps_the_detector_in_fp32_and_records_its_flag_agreement(tmp_path, method):
    run, _ = trained_checkpoint(tmp_path / "run", method)
    result = export_checkpoint(run, tmp_path / "repo", precision="int8", force=True)
    manifest = load_manifest(result.path)
    assert "flag_agreement" in manifest.verification["int8"]["ood"]
    import onnx

    graph = onnx.load(str(result.path / "model.onnx")).graph
    detector_nodes = [n for n in graph.node if "/detector/" in n.name]
    assert detector_nodes and not any("Integer" in n.op_type or "Quant" in n.op_type for n in detector_nodes)


@pytest.mark.parametrize("method", ["composite", "mahalanobis"])
def test_flip_tta_scores_the_unflipped_image(tmp_path, method):
    run, _ = trained_checkpoint(tmp_path / "run", method)
    plain, flipped = load_predictor([run]).model, load_predictor([run], tta_flip=True).model
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain(x)[OOD_OUTPUT], flipped(x)[OOD_OUTPUT], rtol=1e-5)


def test_an_ensemble_has_no_score_and_says_why(tmp_path, caplog):
    first, _ = trained_checkpoint(tmp_path / "a")
    second, _ = trained_checkpoint(tmp_path / "b")
    predictor = load_predictor([first, second])
    assert predictor.info.ood is None and "ensemble has no out-of-distribution score" in predictor.ood_note
    result = export_checkpoint([first, second], tmp_path / "repo")
    manifest = load_manifest(result.path)
    assert manifest.ood is None
    assert "ensemble has no out-of-distribution score" in manifest.verification["ood"]["omitted"]
    assert "ensemble has no out-of-distribution score" in caplog.text


def test_fitted_description_names_what_the_manifest_needs():
    detector = fit_detector("knn", gaussian(10), k=3)
    description = FittedOod(detector, 0.5, 0.05, 40, {"train_images": 10}).describe()
    assert description == {"method": "knn", "parameters": {"k": 3}, "threshold": 0.5, "false_alarm_rate": 0.05,
                           "calibration_images": 40, "output": OOD_OUTPUT, "train_images": 10}


def composite_features(n: int, seed: int, shift: float = 0.0, stats_shift: float = 0.0) -> OodFeatures:
    stats = gaussian(n, dim=9, seed=seed + 100) + stats_shift
    return OodFeatures(gaussian(n, seed=seed, shift=shift), {}, stats)


def test_composite_category_check_flags_another_categorys_images_that_the_features_check_misses():
    train, val, held_out = composite_features(600, 1), composite_features(600, 2), composite_features(2000, 3)
    # Another category: a small shift along the features' narrowest direction, inside the plain spread.
    other = gaussian(600, seed=4)
    other[:, 0] += 1.2
    fitted = fit_ood("composite", train, val, 0.05, contrast=[other])
    sent_under_this_category = gaussian(1000, seed=5)
    sent_under_this_category[:, 0] += 1.2
    plain = fit_ood("mahalanobis", train, val, 0.05)
    with torch.no_grad():
        stats = gaussian(1000, dim=9, seed=6)
        flagged = (fitted.detector.score(sent_under_this_category, {}, stats) > fitted.threshold).float().mean()
        false_alarms = (fitted.detector.score(held_out.pooled, {}, held_out.input_stats) > fitted.threshold).float()
        missed_by_plain = (plain.detector(sent_under_this_category, {}) <= plain.threshold).float().mean()
    assert fitted.detector.checks == ("features", "category", "input")
    assert missed_by_plain > 0.5  # the category check is what catches them
    assert flagged > 0.8
    assert 0.03 <= float(false_alarms.mean()) <= 0.08


def smooth_images(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, 8, 8, generator=generator)
    fine = torch.randn(n, 3, 32, 32, generator=generator) * 0.2
    return F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False) + fine


def test_composite_input_check_flags_blank_noisy_and_blurred_images_whatever_the_features():
    train = OodFeatures(gaussian(400, seed=1), {}, input_statistics(smooth_images(400, 1)))
    val = OodFeatures(gaussian(200, seed=2), {}, input_statistics(smooth_images(200, 2)))
    fitted = fit_ood("composite", train, val, 0.05)
    pooled = gaussian(4, seed=3)  # features like the training images': only the pixels give them away
    blank = torch.full((1, 3, 32, 32), 0.7)
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9)) * 2.0
    blurred = F.avg_pool2d(F.interpolate(smooth_images(2, 7), scale_factor=0.125, mode="area"), 1)
    blurred = F.interpolate(blurred, size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        scores = fitted.detector(pooled, {}, torch.cat([blank, noise, blurred]))
        own = fitted.detector(gaussian(200, seed=4), {}, smooth_images(200, 4))
    assert (scores > fitted.threshold).all(), scores
    assert float((own > fitted.threshold).float().mean()) <= 0.12


def test_composite_without_other_categories_omits_the_category_check_and_says_so():
    fitted = fit_ood("composite", composite_features(100, 1), composite_features(50, 2), 0.05)
    description = fitted.describe()
    assert fitted.detector.checks == ("features", "input")
    assert description["parameters"]["checks"] == ["features", "input"]
    assert "no other categories" in description["parameters"]["omitted"]["category"]
    with pytest.raises(ValueError, match="statistics"):
        fitted.detector.score(gaussian(2), {})
    with pytest.raises(ValueError, match="fit_composite"):
        fit_detector("composite", gaussian(10))
    with pytest.raises(ValueError, match="input statistics"):
        fit_composite(OodFeatures(gaussian(10)), OodFeatures(gaussian(10)))


def test_contrast_sets_sample_each_other_category_and_never_the_own(tmp_path):
    rows = [LabelRow(i, category, {}, tmp_path / f"{i}.jpg")
            for i, category in enumerate(["Men Tshirts"] * 5 + ["Sarees"] * 7 + ["Kurtis"] * 2)]
    rows.append(LabelRow(99, "Sarees", {}, None))  # no image: cannot be seen through the model
    sets = contrast_sets(rows, "Men Tshirts", SPEC, per_category=3, seed=0)
    assert [{r.category for r in s.rows} for s in sets] == [{"Kurtis"}, {"Sarees"}]
    assert [len(s) for s in sets] == [2, 3]
    assert all(r.image_path is not None for s in sets for r in s.rows)
    again = contrast_sets(rows, "Men Tshirts", SPEC, per_category=3, seed=0)
    assert [r.id for s in again for r in s.rows] == [r.id for s in sets for r in s.rows]


def test_composite_refuses_a_check_its_held_out_images_cannot_standardise():
    # One validation image (or held-out scores that do not vary: identical backdrops) gives a check no spread;
    # dividing by a floor of 1e-6 flagged nearly every upload at a threshold of 0.
    with pytest.raises(ValueError, match=r"features, input.* 1 held-out image"):
        fit_ood("composite", composite_features(200, 1), composite_features(1, 2), 0.05)
    backdrop = composite_features(200, 1)
    backdrop.input_stats = torch.full((200, 9), 0.5)
    val = composite_features(40, 2)
    val.input_stats = torch.full((40, 9), 0.5)
    with pytest.raises(ValueError, match=r"input check .* 40 held-out images"):
        fit_ood("composite", backdrop, val, 0.05)


def test_training_ends_without_a_detector_and_says_so_when_the_held_out_images_cannot_set_one(tmp_path):
    from PIL import Image
    from torch.utils.data import DataLoader

    from model_training.config import TrainConfig
    from model_training.ood import fit_category_ood

    spec = PreprocessSpec(height=32, width=32)
    rows = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (40, 40), (90, 30, 30) if i < 3 else (10, 200, 10)).save(path)
        rows.append(LabelRow(i, "Men Tshirts", {}, path))
    training = ImageDataset(rows[3:], np.zeros((3, 0), dtype=np.int64), spec)
    alike = ImageDataset(rows[:3], np.zeros((3, 0), dtype=np.int64), spec)  # three identical images
    torch.manual_seed(0)
    model = CategoryModel(build_backbone("convnext-test"), value_orders_for(MEN), head_hidden=16).eval()
    said: list[str] = []
    fitted = fit_category_ood(TrainConfig(ood="composite", batch_size=4, num_workers=0), model, training,
                              DataLoader(alike, batch_size=4), torch.device("cpu"), said.append)
    assert fitted is None
    assert said and said[-1].startswith("NO OOD DETECTOR") and "cannot be standardised" in said[-1]
