"""The DDP path on the CPU: real processes on gloo. ``torchrun`` trains every category of a tiny catalog,
and the other ranks wait for rank 0's solo work longer than the training group's collective timeout."""

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from catalog.taxonomy import load_taxonomy
from model_training.checkpoint import is_checkpoint_dir
from model_training.runtime import Runtime, init_distributed, wait_for_main
from tests.helpers import ROOT
from tests.tiny_catalog import TINY, make_catalogs


def test_torchrun_with_two_cpu_processes_trains_every_category(tmp_path):
    taxonomy = load_taxonomy()
    data = make_catalogs(tmp_path / "data", list(taxonomy.names), n_train=24, n_test=4)
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "model_training.train", "--data", str(data), "--category", "all", "--out", str(out),
               "--epochs-t1", "2", "--epochs-t2", "1", "--rule-min-support", "3", *TINY]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if is_checkpoint_dir(p)) == sorted(taxonomy.slugs)
    assert result.stdout.count("validation score") >= 5
    assert (out / "train_summary.json").is_file()


def _rank_waits(rank: int, port: int, wait: str, results: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    group = init_distributed("gloo", timeout=timedelta(seconds=2))
    runtime = Runtime(torch.device("cpu"), rank, 2, None, group)
    if rank == 0:
        time.sleep(4)  # rank 0's solo work (T2, calibration) outlasting the training group's timeout
    try:
        wait_for_main(runtime) if wait == "main" else dist.barrier()
        outcome = "ok"
    except RuntimeError as error:
        outcome = f"error: {error}"
    Path(results, str(rank)).write_text(outcome)


@pytest.mark.parametrize("wait", ["main", "plain"])
def test_other_ranks_wait_for_rank_0_longer_than_the_collective_timeout(tmp_path, wait):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_waits, args=(port, wait, str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    outcome = (tmp_path / "1").read_text()
    if wait == "main":
        assert outcome == "ok" and (tmp_path / "0").read_text() == "ok"
    else:  # the control: a barrier in the training group times out while rank 0 works alone
        assert outcome.startswith("error"), outcome
