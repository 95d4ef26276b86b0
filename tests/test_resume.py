"""Resume after an interruption mid-T1 must reach the weights and scores of a run that was never stopped."""

import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import model_training.trainer as train_module
from model_training.checkpoint import load_checkpoint
from model_training.plots import read_metrics
from model_training.resume import STATE_NAME, Resumable, load_state, save_state
from model_training.train import main
from tests.tiny_catalog import TINY, make_catalog


class Interrupted(Exception):
    pass


def parts(seed: int, ema: bool = False) -> Resumable:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    return Resumable(model, optimizer, scheduler, ema=nn.Linear(3, 2) if ema else None)


def test_state_round_trip_restores_weights_optimiser_schedule_and_every_random_state(tmp_path):
    saved = parts(0)
    saved.model(torch.randn(4, 3)).sum().backward()
    saved.optimizer.step()
    saved.scheduler.step()
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    save_state(tmp_path / STATE_NAME, saved, epoch=2, best_score=0.5)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))

    restored = parts(1)
    assert load_state(tmp_path / STATE_NAME, restored, torch.device("cpu")) == (3, 0.5)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert torch.equal(restored.model.weight, saved.model.weight)
    assert restored.scheduler.get_last_lr() == saved.scheduler.get_last_lr()
    assert torch.equal(restored.optimizer.state_dict()["state"][0]["exp_avg"],
                       saved.optimizer.state_dict()["state"][0]["exp_avg"])


def test_a_state_saved_with_an_ema_does_not_resume_a_run_without_one(tmp_path):
    save_state(tmp_path / STATE_NAME, parts(0, ema=True), epoch=0, best_score=0.1)
    with pytest.raises(ValueError, match="saved with the EMA; this run has it off"):
        load_state(tmp_path / STATE_NAME, parts(0), torch.device("cpu"))


def test_resume_after_an_interruption_mid_t1_reaches_the_uninterrupted_result(tmp_path, monkeypatch):
    root = make_catalog(tmp_path / "data", n_train=40, n_test=4)
    args = ["--data", str(root), "--category", "men_tshirts", "--epochs-t1", "3", "--epochs-t2", "1",
            "--rule-min-support", "3", "--drop-path", "0.1", *TINY]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0

    real = train_module.validate_epoch

    def stop_after_first_epoch(*call, **kwargs):
        best = real(*call, **kwargs)
        if call[3] == 0:  # epoch index: the state after epoch 1 is on disk, as after a crash
            raise Interrupted
        return best

    monkeypatch.setattr(train_module, "validate_epoch", stop_after_first_epoch)
    with pytest.raises(Interrupted):
        main([*args, "--out", str(tmp_path / "stopped")])
    assert (tmp_path / "stopped" / STATE_NAME).is_file()
    monkeypatch.setattr(train_module, "validate_epoch", real)
    assert main([*args, "--out", str(tmp_path / "stopped"), "--resume"]) == 0

    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "stopped" / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # The final weights come from the best T1 epoch, which may be the one before the interruption; every
    # epoch's training and validation loss depend on the data order and the random states of all of them.
    def t1_log(run):
        return [(r["epoch"], r["train_loss"], r["val_loss"], r["val_score"]) for r in read_metrics(run)
                if r["phase"] == "t1"]

    assert len(t1_log(tmp_path / "whole")) == 3
    assert t1_log(tmp_path / "stopped") == t1_log(tmp_path / "whole")
    _, a = load_checkpoint(tmp_path / "whole")
    _, b = load_checkpoint(tmp_path / "stopped")
    for key in ("val_score_t1", "val_score_t2", "val_score_calibrated", "val_score"):
        assert a.metrics[key] == b.metrics[key]
