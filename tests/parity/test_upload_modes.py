"""report(checkpoint_upload_mode=SYNC|ASYNC|NO_UPLOAD, delete_local_checkpoint_after_upload, checkpoint_upload_fn)."""

import os
import tempfile
import threading

import pytest

import rafter.train as train
from rafter.train import Checkpoint, CheckpointUploadMode, FailureConfig, ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchTrainer


def fit(fn, run_config, n=2, config=None):
    return TorchTrainer(fn, train_loop_config=config, scaling_config=ScalingConfig(num_workers=n),
                        run_config=run_config).fit()


def write_ckpt(rank, step, size=1):
    d = tempfile.mkdtemp(prefix="rafter-test-ckpt-")
    with open(os.path.join(d, f"rank{rank}.bin"), "wb") as f:
        f.write(bytes([step % 256]) * size)
    return d


def async_reports(config):
    rank = train.get_context().get_world_rank()
    start = train.get_checkpoint()
    first = int(start.get_metadata()["step"]) + 1 if start else 0
    local_dirs, returned_fast = [], []
    for step in range(first, first + 3):
        d = write_ckpt(rank, step, size=config.get("size", 1))
        ck = Checkpoint.from_directory(d)
        if rank == 0:
            ck.set_metadata({"step": step})
        local_dirs.append(d)
        train.report({"step": step}, checkpoint=ck, checkpoint_upload_mode=CheckpointUploadMode.ASYNC)
        returned_fast.append(True)
        train.report({"step": step, "metrics_only": True})  # queued behind the upload: order kept
    listed = [os.path.basename(r.checkpoint.path) for r in train.get_all_reported_checkpoints()]
    return {"deleted": [not os.path.exists(d) for d in local_dirs], "listed": listed}


def test_async_uploads_commit_every_ranks_files_in_order_and_delete_the_local_folders(run_config):
    result = fit(async_reports, run_config(name="async"))
    assert result.return_value["deleted"] == [True, True, True]  # ASYNC's default
    assert result.return_value["listed"] == ["checkpoint_000001", "checkpoint_000002", "checkpoint_000003"]
    assert [m["step"] for m in result.metrics_history] == [0, 0, 1, 1, 2, 2]
    assert sorted(os.listdir(result.checkpoint.path)) == [".metadata.json", "rank0.bin", "rank1.bin"]
    resumed = fit(async_reports, run_config(name="async"))  # resume is unchanged: from the latest checkpoint
    assert [m["step"] for m in resumed.metrics_history][6:] == [3, 3, 4, 4, 5, 5]



def async_returns_before_the_upload(config):
    rank = train.get_context().get_world_rank()
    gate = config["gate"]
    d = write_ckpt(rank, 0)
    if rank == 1:
        os.mkfifo(os.path.join(d, "pipe"))  # reading this file blocks the upload until someone writes it
    train.report({"step": 0}, checkpoint=Checkpoint.from_directory(d),
                 checkpoint_upload_mode=CheckpointUploadMode.ASYNC, delete_local_checkpoint_after_upload=False)
    if rank == 1:
        with open(os.path.join(d, "pipe"), "wb") as f:  # report() returned while the upload waits on the pipe
            f.write(b"released")
    return gate


def test_async_report_returns_while_the_upload_runs(run_config):
    result = fit(async_returns_before_the_upload, run_config(name="async-gate"), config={"gate": "ok"})
    assert result.return_value == "ok"
    with open(os.path.join(result.checkpoint.path, "pipe"), "rb") as f:
        assert f.read() == b"released"


def async_upload_fails():
    rank = train.get_context().get_world_rank()
    d = write_ckpt(rank, 0)
    if rank == 1:
        os.symlink("/nonexistent/target", os.path.join(d, "dangling.bin"))  # the copy of this file fails
    train.report({"step": 0}, checkpoint=Checkpoint.from_directory(d),
                 checkpoint_upload_mode=CheckpointUploadMode.ASYNC)
    threading.Event().wait(30)  # training goes on; the failed upload ends the attempt


def test_a_failed_async_upload_fails_the_attempt_naming_rank_and_file(run_config):
    with pytest.raises(TrainingFailedError) as info:
        fit(async_upload_fails, run_config(name="async-fail"))
    text = str(info.value)
    assert info.value.rank == 1
    assert "Rank 1: uploading file" in text and "dangling.bin" in text and "checkpoint_upload_mode=ASYNC" in text


def sync_keeps_or_deletes(config):
    rank = train.get_context().get_world_rank()
    d1, d2 = write_ckpt(rank, 0), write_ckpt(rank, 1)
    train.report({"s": 0}, checkpoint=Checkpoint.from_directory(d1))
    train.report({"s": 1}, checkpoint=Checkpoint.from_directory(d2), delete_local_checkpoint_after_upload=True)
    return os.path.exists(d1), os.path.exists(d2)


def test_sync_keeps_the_local_folder_unless_asked(run_config):
    assert fit(sync_keeps_or_deletes, run_config(name="sync")).return_value == (True, False)


def no_upload(config):
    ctx = train.get_context()
    rank = ctx.get_world_rank()
    exp = ctx.get_storage().experiment_fs_path
    d = os.path.join(exp, "in_place_1")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"rank{rank}.txt"), "w") as f:
        f.write("x")
    train.report({"s": 0}, checkpoint=Checkpoint(d), checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)

    def upload(checkpoint, dir_name):
        target = os.path.join(exp, dir_name)
        os.makedirs(target, exist_ok=True)
        for name in os.listdir(checkpoint.path):
            with open(os.path.join(checkpoint.path, name), "rb") as src, open(os.path.join(target, name), "wb") as dst:
                dst.write(src.read())
        return Checkpoint(target)

    train.report({"s": 1}, checkpoint=Checkpoint.from_directory(write_ckpt(rank, 1)), checkpoint_dir_name="mine",
                 checkpoint_upload_fn=upload)
    return [os.path.basename(r.checkpoint.path) for r in train.get_all_reported_checkpoints()]


def test_no_upload_and_upload_fn_commit_the_folder_in_place(run_config):
    result = fit(no_upload, run_config(name="inplace"))
    assert result.return_value == ["in_place_1", "mine"]
    assert sorted(os.listdir(os.path.join(result.path, "in_place_1"))) == ["rank0.txt", "rank1.txt"]
    assert sorted(os.listdir(result.checkpoint.path)) == ["rank0.bin", "rank1.bin"]


def no_upload_outside():
    train.report({"s": 0}, checkpoint=Checkpoint.from_directory(write_ckpt(0, 0)),
                 checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)


def test_no_upload_outside_the_run_folder_is_refused(run_config):
    with pytest.raises(TrainingFailedError, match="must already be a folder of the run folder"):
        fit(no_upload_outside, run_config(name="outside"), n=1)


def test_async_in_local_mode(run_config):
    result = TorchTrainer(async_reports, scaling_config=ScalingConfig(num_workers=0),
                          run_config=run_config(name="async-local")).fit()
    assert result.return_value["deleted"] == [True, True, True]
    assert len(result.return_value["listed"]) == 3
