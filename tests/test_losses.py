import numpy as np
import pytest
import torch

from catalog.taxonomy import load_taxonomy
from model_training.backbone import build_backbone
from model_training.losses import MaskedMultiTaskLoss, balanced_weights, class_counts, mmd
from model_training.model import CategoryModel, value_orders_for


def test_masked_loss_ignores_missing_labels():
    torch.manual_seed(0)
    logits = {"a": torch.randn(4, 3, requires_grad=True), "b": torch.randn(4, 2, requires_grad=True)}
    targets = torch.tensor([[0, -1], [2, 1], [-1, -1], [1, 0]])
    total, parts = MaskedMultiTaskLoss(["a", "b"])(logits, targets)
    expected_a = torch.nn.functional.cross_entropy(logits["a"][[0, 1, 3]], torch.tensor([0, 2, 1]))
    expected_b = torch.nn.functional.cross_entropy(logits["b"][[1, 3]], torch.tensor([1, 0]))
    torch.testing.assert_close(parts["a"], expected_a)
    torch.testing.assert_close(parts["b"], expected_b)
    total.backward()
    # rows without a label get no gradient from that head
    assert logits["a"].grad[2].abs().sum() == 0
    assert logits["b"].grad[[0, 2]].abs().sum() == 0
    assert logits["b"].grad[1].abs().sum() > 0


def test_fully_unlabelled_attribute_gives_zero_loss_connected_to_graph():
    logits = {"a": torch.randn(2, 3, requires_grad=True)}
    total, _ = MaskedMultiTaskLoss(["a"])(logits, torch.tensor([[-1], [-1]]))
    assert float(total.detach()) == 0.0 and total.requires_grad


def test_balanced_and_logit_adjusted_losses_favour_rare_classes():
    targets = np.array([[0]] * 90 + [[1]] * 10)
    counts = class_counts(targets, [2])
    weights = balanced_weights(counts[0])
    assert weights[1] > weights[0]
    logits = {"a": torch.zeros(1, 2)}
    rare = torch.tensor([[1]])
    plain = MaskedMultiTaskLoss(["a"], counts, "ce")(logits, rare)[0]
    adjusted = MaskedMultiTaskLoss(["a"], counts, "logit_adjusted")(logits, rare)[0]
    assert adjusted > plain  # the rare class must win by a margin, so equal logits cost more
    with pytest.raises(ValueError, match="unknown loss"):
        MaskedMultiTaskLoss(["a"], counts, "focal")


def test_mmd_separates_distributions_and_is_zero_for_identical_ones():
    torch.manual_seed(0)
    x = torch.randn(32, 8)
    assert float(mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(mmd(x, torch.randn(32, 8) + 3.0)) > 0.1


def test_mmd_gradient_reaches_the_backbone():
    torch.manual_seed(0)
    model = CategoryModel(build_backbone("convnext-test"), value_orders_for(load_taxonomy()["men_tshirts"]))
    source = model.pooled(model.features(torch.randn(4, 3, 32, 32)))
    target = model.pooled(model.features(torch.randn(4, 3, 32, 32) + 1.0))
    mmd(source, target).backward()
    stem = model.backbone.model.embeddings.patch_embeddings.weight.grad
    assert stem is not None and stem.abs().sum() > 0
