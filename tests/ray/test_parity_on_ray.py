"""The Ray parity API on the Ray backend (workers are Ray actors): collectives, UserCallback,
get_all_reported_checkpoints, ASYNC uploads and storage_filesystem. Real 2-node cluster, real gloo."""

import os
import tempfile

import pytest

import rafter.train as train
from rafter.train import Checkpoint, CheckpointUploadMode, RunConfig, ScalingConfig, TrainingFailedError
from rafter.train.collective import barrier, broadcast_from_rank_zero
from rafter.train.torch import TorchTrainer

pytest.importorskip("ray")


class Gather(train.UserCallback):
    def __init__(self):
        self.reports, self.exceptions = [], []

    def after_report(self, run_context, metrics, checkpoint):
        self.reports.append(([m["rank"] for m in metrics], checkpoint is not None))

    def after_exception(self, run_context, worker_exceptions):
        self.exceptions.append({r: type(e).__name__ for r, e in worker_exceptions.items()})


def everything(config):
    rank = train.get_context().get_world_rank()
    token = broadcast_from_rank_zero(f"from-{rank}")
    barrier()
    d = tempfile.mkdtemp()
    with open(os.path.join(d, f"rank{rank}.txt"), "w") as f:
        f.write(token)
    train.report({"rank": rank}, checkpoint=Checkpoint.from_directory(d),
                 checkpoint_upload_mode=CheckpointUploadMode.ASYNC)
    listed = [os.path.basename(r.checkpoint.path) for r in train.get_all_reported_checkpoints()]
    storage = train.get_context().get_storage()
    return {"token": token, "listed": listed, "deleted": not os.path.exists(d),
            "fs": type(storage.storage_filesystem).__name__}


def test_collectives_callbacks_async_uploads_and_filesystem_on_ray(ray_cluster, tmp_path):
    pafs = pytest.importorskip("pyarrow.fs")
    (tmp_path / "bucket").mkdir()
    fs = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    gather = Gather()
    result = TorchTrainer(everything, scaling_config=ScalingConfig(num_workers=4),
                          run_config=RunConfig(name="parity", storage_path="runs", storage_filesystem=fs,
                                               cluster="ray", callbacks=[gather])).fit()
    assert result.return_value == {"token": "from-0", "listed": ["checkpoint_000001"], "deleted": True,
                                   "fs": "SubTreeFileSystem"}
    assert gather.reports == [([0, 1, 2, 3], True)]
    folder = tmp_path / "bucket" / "runs" / "parity" / "checkpoint_000001"
    assert sorted(os.listdir(folder)) == [f"rank{r}.txt" for r in range(4)]
    assert all((folder / f"rank{r}.txt").read_text() == "from-0" for r in range(4))


def mismatch():
    if train.get_context().get_world_rank() == 0:
        barrier()


def test_a_missing_collective_fails_fast_on_ray(ray_cluster, run_config):
    gather = Gather()
    with pytest.raises(TrainingFailedError, match=r"barrier\(\) call #1 can never complete"):
        TorchTrainer(mismatch, scaling_config=ScalingConfig(num_workers=2),
                     run_config=run_config(name="mismatch", cluster="ray", callbacks=[gather])).fit()
    assert gather.exceptions == [{0: "RuntimeError"}]
