"""The integrations in local mode (``num_workers=0``): the same train functions run in the driver process."""

import pytest

from rafter.train import RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer


def _local(fn, tmp_path, name):
    return TorchTrainer(fn, train_loop_config={"output_dir": str(tmp_path / f"{name}_out")},
                        scaling_config=ScalingConfig(num_workers=0),
                        run_config=RunConfig(name=name, storage_path=str(tmp_path / "results"))).fit()


def test_hf_and_lightning_trainers_report_and_checkpoint_in_local_mode_and_leave_the_process_as_it_was(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("lightning")
    import os
    import threading

    import torch.distributed as dist

    from tests.integrations.tiny import hf_train, lightning_train

    env = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    threads = set(threading.enumerate())
    had_group = dist.is_initialized()

    hf = _local(hf_train, tmp_path, "hf")
    got = [m["step"] for m in hf.metrics_history]
    assert got == [1, 2, 3, 4, 5, 6, 7, 8, 8]  # one worker, the same 8 steps as on two
    assert (tmp_path / "results" / "hf" / hf.checkpoint.path.rsplit("/", 1)[-1] / "checkpoint").is_dir()
    pl = _local(lightning_train, tmp_path, "pl")
    got = [(m["epoch"], m["step"]) for m in pl.metrics_history]
    assert got == [(0, 8), (1, 16), (2, 24), (3, 32)]  # 64 samples in batches of 8, one process
    assert pl.return_value["world_size"] == 1
    assert dist.is_initialized() == had_group  # Lightning's group of one is gone with its environment variables
    assert {k: os.environ.get(k) for k in env} == env
    left = [t.name for t in threading.enumerate() if t not in threads]
    assert left == []  # nothing left running (see conftest.py for tqdm's monitor)
