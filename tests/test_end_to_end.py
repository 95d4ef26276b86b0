import itertools

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from catalog.taxonomy import load_taxonomy
from model_training.backbone import build_backbone
from model_training.end_to_end import WithFeatures, endless, warmup_cosine
from model_training.model import CategoryModel, value_orders_for


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    factor = warmup_cosine(total_steps=100, warmup_fraction=0.1)
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0) and factor(150) == pytest.approx(0.0)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 120))


def test_endless_cycles_through_the_loader_images():
    images = torch.arange(3, dtype=torch.float32).reshape(3, 1)
    loader = DataLoader(TensorDataset(images, torch.zeros(3)), batch_size=2)
    batches = [b.squeeze(1).tolist() for b in itertools.islice(endless(loader), 4)]
    assert batches == [[0.0, 1.0], [2.0], [0.0, 1.0], [2.0]]


def test_with_features_gives_the_model_logits_and_its_pooled_features():
    torch.manual_seed(0)
    model = CategoryModel(build_backbone("convnext-test"), value_orders_for(load_taxonomy()["men_tshirts"]),
                          head_hidden=16).eval()
    pixels = torch.randn(2, 3, 32, 32)
    logits, pooled = WithFeatures(model)(pixels)
    expected = model(pixels)
    assert list(logits) == list(expected)
    assert all(torch.allclose(logits[name], expected[name]) for name in expected)
    assert pooled.shape == (2, model.num_features)
