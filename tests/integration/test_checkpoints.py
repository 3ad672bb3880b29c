"""Checkpoints that survive crashes, on a local path and on fsspec memory:// alike."""

import os
import tempfile
import uuid

import pytest
import torch
import torch.distributed as dist

import rafter.train as train
from rafter.testing import ChaosMonkey, inject_fault
from rafter.train import Checkpoint, CheckpointConfig, FailureConfig, Result, RunConfig, ScalingConfig
from rafter.train import TrainingFailedError
from rafter.train.torch import TorchTrainer
from rafter._storage import Storage


@pytest.fixture(params=["local", "memory"])
def storage_path(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "results")
    else:
        path = f"memory://rafter-tests/{uuid.uuid4().hex}"
        yield path
        Storage(path).remove(path)


def trainer(fn, storage_path, n=2, config=None, name="run", **run):
    return TorchTrainer(fn, train_loop_config=config, scaling_config=ScalingConfig(num_workers=n),
                        run_config=RunConfig(name=name, storage_path=storage_path, **run))


def listing(storage_path, name="run"):
    s = Storage(storage_path)
    return [n for n in s.listdir(s.join(name)) if n.startswith("checkpoint_")]


# -- Checkpoint object -------------------------------------------------------------------------
def test_checkpoint_object(tmp_path):
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "w.txt").write_text("weights")
    ckpt = Checkpoint.from_directory(str(src))
    with ckpt.as_directory() as d:
        assert d == str(src)  # local: no copy
    out = ckpt.to_directory(str(tmp_path / "copy"))
    assert open(os.path.join(out, "w.txt")).read() == "weights"
    ckpt.set_metadata({"epoch": 1})
    ckpt.update_metadata({"step": 7})
    assert ckpt.get_metadata() == {"epoch": 1, "step": 7}
    with pytest.raises(FileNotFoundError, match="no such directory"):
        Checkpoint.from_directory(str(tmp_path / "missing"))


# -- every rank's files land in one committed folder -------------------------------------------
def each_rank_writes(config):
    rank = train.get_context().get_world_rank()
    for step in range(config["steps"]):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, f"rank_{rank}.txt"), "w") as f:
                f.write(f"step {step}")
            train.report({"step": step, "score": config["scores"][step]}, checkpoint=Checkpoint.from_directory(d))


def test_files_of_all_ranks_land_in_one_checkpoint(storage_path):
    result = trainer(each_rank_writes, storage_path, config={"steps": 2, "scores": [0, 0]}).fit()
    assert listing(storage_path) == ["checkpoint_000001", "checkpoint_000002"]
    assert result.checkpoint.path.endswith("run/checkpoint_000002")
    with result.checkpoint.as_directory() as d:
        assert sorted(os.listdir(d)) == ["rank_0.txt", "rank_1.txt"]
        assert open(os.path.join(d, "rank_1.txt")).read() == "step 1"
    rebuilt = Result.from_path(result.path)
    assert rebuilt.checkpoint == result.checkpoint and rebuilt.metrics == result.metrics


def test_retention_keeps_the_best_k_and_the_latest(storage_path):
    scores = [0.5, 0.9, 0.1, 0.7, 0.3]
    result = trainer(each_rank_writes, storage_path, config={"steps": 5, "scores": scores},
                     checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="score")).fit()
    # best is #2 (0.9); the latest (#5, 0.3) is always kept even though #4 (0.7) scores higher
    assert listing(storage_path) == ["checkpoint_000002", "checkpoint_000005"]
    scores = [m["score"] for _, m in result.best_checkpoints]
    assert scores == [0.9, 0.3]
    assert result.checkpoint.path.endswith("checkpoint_000005")


# -- restart from the latest checkpoint after a failure ----------------------------------------
def resumes_after_failure(config):
    ctx = train.get_context()
    ckpt = train.get_checkpoint()
    start = 0
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = torch.load(os.path.join(d, "state.pt"), weights_only=True)["step"] + 1
    for step in range(start, 6):
        if ctx.get_attempt() == 1 and step == 3 and ctx.get_world_rank() == 1:
            raise RuntimeError("transient failure at step 3")
        with tempfile.TemporaryDirectory() as d:
            if ctx.get_world_rank() == 0:
                torch.save({"step": step}, os.path.join(d, "state.pt"))
            train.report({"step": step, "attempt": ctx.get_attempt()},
                         checkpoint=Checkpoint.from_directory(d) if ctx.get_world_rank() == 0 else None)
    return start


def test_restart_resumes_from_latest_checkpoint(storage_path):
    result = trainer(resumes_after_failure, storage_path, failure_config=FailureConfig(max_failures=1)).fit()
    assert result.return_value == 3  # the second attempt started after the step-2 checkpoint
    steps = [(m["attempt"], m["step"]) for m in result.metrics_history]
    assert steps[-3:] == [(2, 3), (2, 4), (2, 5)]
    attempts = [a["attempt"] for a in result.attempts]
    assert attempts == [1, 2]
    assert "transient failure at step 3" in result.attempts[0]["error"]
    assert result.attempts[1]["first_report"] == len(steps) - 3  # where the restart begins in the history


def test_without_retries_the_failure_is_raised(storage_path):
    with pytest.raises(TrainingFailedError, match="transient failure at step 3"):
        trainer(resumes_after_failure, storage_path).fit()


# -- a worker SIGKILLed while writing its checkpoint leaves nothing torn --------------------------
def writes_two_files(config):
    rank = train.get_context().get_world_rank()
    for step in range(4):
        with tempfile.TemporaryDirectory() as d:
            for part in ("a", "b"):
                torch.save({"step": step, "part": part}, os.path.join(d, f"rank{rank}_{part}.pt"))
            train.report({"step": step}, checkpoint=Checkpoint.from_directory(d))
        t = torch.zeros(1)
        dist.all_reduce(t)


def test_sigkill_while_writing_a_checkpoint_leaves_no_torn_checkpoint(storage_path):
    t = trainer(writes_two_files, storage_path)
    inject_fault(t, point="upload", action="sigkill", rank=1, report=2)
    with pytest.raises(TrainingFailedError) as info:
        t.fit()
    assert info.value.rank == 1 and "killed by SIGKILL" in info.value.first_line
    assert listing(storage_path) == ["checkpoint_000001", "checkpoint_000002"]
    s = Storage(storage_path)
    assert not s.exists(s.join("run", ".staging"))
    result = Result.from_path(s.join("run"))
    assert result.error is not None and result.checkpoint.path.endswith("checkpoint_000002")
    with result.checkpoint.as_directory() as d:
        assert sorted(os.listdir(d)) == ["rank0_a.pt", "rank0_b.pt", "rank1_a.pt", "rank1_b.pt"]
        assert torch.load(os.path.join(d, "rank1_b.pt"), weights_only=True) == {"step": 1, "part": "b"}


# -- a folder that is not this run's -------------------------------------------------------------
def test_a_foreign_run_folder_is_refused(tmp_path):
    (tmp_path / "results" / "run").mkdir(parents=True)
    (tmp_path / "results" / "run" / "notes.txt").write_text("not rafter")
    with pytest.raises(ValueError, match="not written by rafter"):
        trainer(each_rank_writes, str(tmp_path / "results"), config={"steps": 1, "scores": [0]}).fit()


def other_function(config):
    train.report({"x": 1})


def test_resuming_with_a_different_train_function_is_refused(tmp_path):
    path = str(tmp_path / "results")
    trainer(other_function, path, n=1).fit()
    with pytest.raises(ValueError, match="would mix two different runs"):
        trainer(each_rank_writes, path, n=1, config={"steps": 1, "scores": [0]}).fit()
