"""The PyTorch patterns of Ray Train's user guides (checkpoints, fault tolerance, results, metrics), written
as a Ray Train user writes them, with ``rafter`` in place of ``ray``. Tiny models, 2 workers, no downloads."""

import os
import tempfile

import numpy as np
import pytest
import torch
import torch.nn as nn

from rafter import train
import rafter.train.torch
from rafter.train import Checkpoint, CheckpointConfig, FailureConfig, Result, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer


def train_with_restore(config):
    """Checkpoints guide: rank 0 saves model, optimizer and epoch; a restart resumes from them."""
    X = torch.Tensor(np.random.normal(0, 1, size=(64, 4)))
    Y = torch.Tensor(np.random.uniform(0, 1, size=(64, 1)))
    model = rafter.train.torch.prepare_model(nn.Linear(4, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    criterion = nn.MSELoss()
    start_epoch = 0
    checkpoint = train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            model.module.load_state_dict(torch.load(os.path.join(d, "model.pt")))
            optimizer.load_state_dict(torch.load(os.path.join(d, "optimizer.pt")))
            start_epoch = torch.load(os.path.join(d, "extra_state.pt"))["epoch"] + 1
    for epoch in range(start_epoch, config["num_epochs"]):
        loss = criterion(model(X), Y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if train.get_context().get_world_rank() == 0:
                torch.save(model.module.state_dict(), os.path.join(tmp, "model.pt"))
                torch.save(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
                torch.save({"epoch": epoch}, os.path.join(tmp, "extra_state.pt"))
                checkpoint = Checkpoint.from_directory(tmp)
            train.report({"loss": loss.item(), "epoch": epoch}, checkpoint=checkpoint)
        if epoch == 1:  # after the restart training resumes at epoch 2, so this fails once
            raise RuntimeError("Intentional error to showcase restoration!")


def test_checkpoints_and_fault_tolerance_guide(tmp_path):
    result = TorchTrainer(
        train_with_restore,
        train_loop_config={"num_epochs": 4},
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(storage_path=str(tmp_path), name="restore",
                             failure_config=FailureConfig(max_failures=1)),
    ).fit()
    assert [m["epoch"] for m in result.metrics_history] == [0, 1, 2, 3]  # resumed after epoch 1, not from 0
    assert [a["error"] is not None for a in result.attempts] == [True, False]
    with result.checkpoint.as_directory() as d:
        assert torch.load(os.path.join(d, "extra_state.pt"))["epoch"] == 3


def three_reports(config):
    for i in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            open(os.path.join(tmp, "model.pt"), "w").close()
            train.report({"loss": [0.5, 0.2, 0.4][i]}, checkpoint=Checkpoint.from_directory(tmp))


def error_train_fn(config):
    raise RuntimeError("Simulated training error")


def test_results_guide(tmp_path):
    run_config = RunConfig(name="my_train_run", storage_path=str(tmp_path),
                           checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="loss",
                                                              checkpoint_score_order="min"))
    result = TorchTrainer(three_reports, scaling_config=ScalingConfig(num_workers=2), run_config=run_config).fit()
    assert result.metrics == {"loss": 0.4}
    assert min(result.metrics_dataframe["loss"]) == 0.2
    best = min(result.best_checkpoints, key=lambda cm: cm[1]["loss"])[0]
    assert best == result.get_best_checkpoint("loss", "min")
    with best.as_directory() as d:
        assert os.listdir(d) == ["model.pt"]
    pafs = pytest.importorskip("pyarrow.fs")
    assert isinstance(result.filesystem, pafs.FileSystem) and result.path == str(tmp_path / "my_train_run")
    restored = Result.from_path(result.path)
    assert restored.metrics == {"loss": 0.4} and restored.checkpoint == result.checkpoint

    with pytest.raises(train.TrainingFailedError) as info:
        TorchTrainer(error_train_fn, scaling_config=ScalingConfig(num_workers=1),
                     run_config=RunConfig(name="error", storage_path=str(tmp_path))).fit()
    assert isinstance(info.value, train.WorkerGroupError)
    assert "Simulated training error" in info.value.worker_failures[0]["headline"]


def metrics_aggregated(config):
    """Metrics guide: aggregate a validation metric over the ranks before reporting it."""
    import torch.distributed as dist

    rank = train.get_context().get_world_rank()
    model = rafter.train.torch.prepare_model(nn.Linear(4, 1))
    X_valid = torch.full((8, 4), float(rank))
    for epoch in range(2):
        with torch.no_grad():
            valid_loss = model(X_valid).pow(2).mean()
        total = valid_loss.clone()
        dist.all_reduce(total)
        train.report({"valid_loss": valid_loss.item(), "mean_valid_loss": total.item() / 2, "epoch": epoch})


def test_metrics_guide(tmp_path):
    result = TorchTrainer(metrics_aggregated, scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(name="metrics", storage_path=str(tmp_path))).fit()
    assert [m["epoch"] for m in result.metrics_history] == [0, 1]
    assert result.metrics["mean_valid_loss"] >= result.metrics["valid_loss"] / 2
