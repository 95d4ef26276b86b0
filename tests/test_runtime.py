import torch

from model_training.config import TrainConfig
from model_training.runtime import Runtime, autocast, log, resolve_device, setup_runtime


def test_a_plain_process_is_the_single_main_rank_in_full_precision_on_the_cpu(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    runtime = setup_runtime(TrainConfig(device="cpu", amp=True))
    assert runtime == Runtime(torch.device("cpu"))
    assert runtime.is_main and not runtime.distributed


def test_only_the_main_rank_logs(capsys):
    log(Runtime(torch.device("cpu"), rank=1, world_size=2), "from rank 1")
    log(Runtime(torch.device("cpu"), rank=0, world_size=2), "from rank 0")
    assert capsys.readouterr().out == "from rank 0\n"


def test_autocast_is_mixed_precision_only_with_an_amp_dtype():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu"), None):
        assert (a @ b).dtype == torch.float32
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16


def test_auto_picks_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")

