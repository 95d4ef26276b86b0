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


@pytest.mark.parametrize("backbone", ["convnext-test", "vit-test"])
def test_an_epoch_under_cpu_bf16_autocast_gives_a_finite_loss_and_moves_the_weights(backbone):
    from model_training.config import TrainConfig
    from model_training.end_to_end import train_one_epoch
    from model_training.losses import MaskedMultiTaskLoss
    from model_training.runtime import Runtime

    torch.manual_seed(0)
    orders = value_orders_for(load_taxonomy()["men_tshirts"])
    model = CategoryModel(build_backbone(backbone), orders, head_hidden=16)
    criterion = MaskedMultiTaskLoss(list(orders))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    targets = torch.stack([torch.randint(len(v), (8,)) for v in orders.values()], dim=1)
    loader = DataLoader(TensorDataset(torch.randn(8, 3, 64, 64), targets), batch_size=4)
    before = [p.detach().clone() for p in model.parameters()]
    runtime = Runtime(torch.device("cpu"), amp_dtype=torch.bfloat16)
    loss = train_one_epoch(TrainConfig(progress=False), runtime, WithFeatures(model), loader, criterion, optimizer,
                           scheduler, None, None, desc="bf16")
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights
    moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)]
    assert all(moved), f"{moved.count(False)} of {len(moved)} tensors got no update"
