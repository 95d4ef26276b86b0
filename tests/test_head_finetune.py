import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from catalog.taxonomy import load_taxonomy
from model_training.backbone import build_backbone
from model_training.config import TrainConfig
from model_training.head_finetune import all_head_logits, extract_features, finetune_heads
from model_training.losses import MaskedMultiTaskLoss
from model_training.model import CategoryModel, value_orders_for
from model_training.plots import read_metrics
from model_training.runtime import Runtime
from model_training.validation import attribute_hm

CPU = Runtime(torch.device("cpu"))


def tiny_model():
    torch.manual_seed(0)
    return CategoryModel(build_backbone("convnext-test"), value_orders_for(load_taxonomy()["men_tshirts"]),
                         head_hidden=16)


def loader(n, seed):
    """Random images; targets random, with the last attribute wholly unlabelled."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, 3, 32, 32, generator=generator)
    targets = torch.stack([torch.randint(0, 2, (n,), generator=generator) for _ in range(5)], dim=1)
    targets[:, -1] = -1
    return DataLoader(TensorDataset(pixels, targets), batch_size=8)


def test_features_are_extracted_once_in_fp16_on_the_cpu_with_their_targets():
    model = tiny_model()
    features, targets = extract_features(model, loader(10, seed=1), CPU)
    assert features.dtype == torch.float16 and features.device.type == "cpu"
    assert features.shape[:2] == (10, model.num_features)
    assert targets.shape == (10, 5) and (targets[:, -1] == -1).all()
    logits = all_head_logits(model, features, CPU.device)
    assert list(logits) == list(model.attribute_names)
    assert all(v.shape == (10, len(model.value_orders[k])) and v.dtype == np.float32 for k, v in logits.items())


def test_finetuning_keeps_each_heads_best_epoch_so_validation_never_drops(tmp_path):
    model = tiny_model()
    model.freeze_backbone()
    train, val = extract_features(model, loader(24, seed=2), CPU), extract_features(model, loader(12, seed=3), CPU)

    def val_hms():
        logits = all_head_logits(model, val[0], CPU.device)
        return [attribute_hm(val[1][:, a], logits[name].argmax(1), len(model.value_orders[name]))
                for a, name in enumerate(model.attribute_names)]

    before = val_hms()
    cfg = TrainConfig(epochs_t2=3, batch_size=8, t2_lr=1e-2, seed=0)
    finetune_heads(cfg, CPU, model, MaskedMultiTaskLoss(model.attribute_names), train, val, tmp_path)
    after = val_hms()
    assert all(b >= a - 1e-12 for a, b in zip(before, after, strict=True))
    records = read_metrics(tmp_path)
    unlabelled = model.attribute_names[-1]
    assert [r["epoch"] for r in records if r["attribute"] == unlabelled] == [0]  # nothing to train on
    assert [r["epoch"] for r in records if r["attribute"] == model.attribute_names[0]] == [0, 1, 2, 3]
    best_logged = max(r["val_hm"] for r in records if r["attribute"] == model.attribute_names[0])
    assert after[0] == best_logged
