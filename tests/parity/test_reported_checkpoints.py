"""train.get_all_reported_checkpoints() and ReportedCheckpoint, as in Ray Train 2.60."""

import os
import tempfile

import pytest

import rafter.train as train
from rafter.train import (
    CheckpointConfig,
    CheckpointConsistencyMode,
    Checkpoint,
    ReportedCheckpoint,
    ReportedCheckpointStatus,
    ScalingConfig,
)
from rafter.train.torch import TorchTrainer


def reports_then_lists(config):
    rank = train.get_context().get_world_rank()
    seen = []
    for i in range(3):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, f"r{rank}.txt"), "w") as f:
                f.write(str(i))
            train.report({"i": i, "score": [5, 9, 7][i]}, checkpoint=Checkpoint.from_directory(d))
        got = train.get_all_reported_checkpoints()  # waits until this report's checkpoint is committed
        assert all(isinstance(r, ReportedCheckpoint) and r.status is ReportedCheckpointStatus.COMMITTED
                   for r in got), got
        seen.append([(os.path.basename(r.checkpoint.path), r.metrics["i"]) for r in got])
        train.report({"no_checkpoint": i})  # metrics only: nothing to wait for, the list stays the same
        again = train.get_all_reported_checkpoints(CheckpointConsistencyMode.COMMITTED, timeout_s=30)
        assert [r.checkpoint.path for r in again] == [r.checkpoint.path for r in got]
    return seen


@pytest.mark.parametrize("num_workers", [2, 0])
def test_every_rank_sees_its_reports_checkpoint_committed(run_config, num_workers):
    result = TorchTrainer(reports_then_lists, scaling_config=ScalingConfig(num_workers=num_workers),
                          run_config=run_config(name=f"all{num_workers}", checkpoint_config=CheckpointConfig(
                              num_to_keep=2, checkpoint_score_attribute="score"))).fit()
    assert result.return_value == [
        [("checkpoint_000001", 0)],
        [("checkpoint_000001", 0), ("checkpoint_000002", 1)],
        [("checkpoint_000002", 1), ("checkpoint_000003", 2)],  # retention kept the best two (9 and 7)
    ]


def test_timeout_returns_what_is_committed_so_far(run_config):
    def train_func():
        rank = train.get_context().get_world_rank()
        if rank == 1:
            train.collective.barrier()  # after rank 0 listed
            with tempfile.TemporaryDirectory() as d:
                train.report({"i": 0}, checkpoint=Checkpoint.from_directory(d))
            return None
        with tempfile.TemporaryDirectory() as d:
            train.report({"i": 0}, checkpoint=Checkpoint.from_directory(d))
        listed = len(train.get_all_reported_checkpoints(timeout_s=0.5))  # rank 1 has not reported yet
        train.collective.barrier()
        return listed

    result = TorchTrainer(train_func, scaling_config=ScalingConfig(num_workers=2),
                          run_config=run_config(name="timeout")).fit()
    assert result.return_value == 0
    assert result.checkpoint is not None


def fewer_reports():
    rank = train.get_context().get_world_rank()
    if rank == 1:
        return None  # returns without reporting
    with tempfile.TemporaryDirectory() as d:
        train.report({"i": 0}, checkpoint=Checkpoint.from_directory(d))
    return len(train.get_all_reported_checkpoints())


def test_a_rank_that_finished_with_fewer_reports_does_not_hang_the_caller(run_config):
    result = TorchTrainer(fewer_reports, scaling_config=ScalingConfig(num_workers=2),
                          run_config=run_config(name="fewer")).fit()
    assert result.return_value == 0  # not committed while rank 1 never reported it (committed at the end)
    assert result.checkpoint is not None


def test_on_the_driver_it_says_where_to_call_it():
    with pytest.raises(RuntimeError, match="get_all_reported_checkpoints\\(\\) can only be called inside"):
        train.get_all_reported_checkpoints()
    with pytest.raises(TypeError, match="expected a CheckpointConsistencyMode"):
        train.get_all_reported_checkpoints("COMMITTED")
