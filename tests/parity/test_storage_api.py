"""report(checkpoint_dir_name=), get_context().get_storage(), RunConfig(storage_filesystem=), Result.filesystem,
Result.from_path(pathlib.Path, storage_filesystem=)."""

import os
import pathlib
import tempfile

import pytest

import rafter.train as train
from rafter.train import Checkpoint, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer

pafs = pytest.importorskip("pyarrow.fs")


def fit(fn, run_config, n=2, config=None):
    return TorchTrainer(fn, train_loop_config=config, scaling_config=ScalingConfig(num_workers=n),
                        run_config=run_config).fit()


def named_checkpoints(config):
    rank = train.get_context().get_world_rank()
    start = train.get_checkpoint()
    names = config["names"]
    for i, name in enumerate(names):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, f"rank{rank}.txt"), "w") as f:
                f.write(f"{name}:{i}")
            train.report({"i": i}, checkpoint=Checkpoint.from_directory(d), checkpoint_dir_name=name)
    return start.path if start else None


def test_checkpoint_dir_name_names_the_folder_and_resume_finds_it(run_config):
    result = fit(named_checkpoints, run_config(name="named"), config={"names": ["epoch_0", "epoch_1"]})
    assert result.checkpoint.path == os.path.join(result.path, "epoch_1")
    assert sorted(os.listdir(result.checkpoint.path)) == ["rank0.txt", "rank1.txt"]
    assert [os.path.basename(c.path) for c, _ in result.best_checkpoints] == ["epoch_0", "epoch_1"]
    again = fit(named_checkpoints, run_config(name="named"), config={"names": ["epoch_2"]})
    assert again.return_value == os.path.join(result.path, "epoch_1")  # get_checkpoint() after the restart
    assert Checkpoint(again.checkpoint.path) == train.Result.from_path(result.path).checkpoint


def test_reusing_a_name_replaces_that_checkpoint(run_config):
    result = fit(named_checkpoints, run_config(name="reuse"), config={"names": ["best", "other", "best"]})
    assert sorted(os.path.basename(c.path) for c, _ in result.best_checkpoints) == ["best", "other"]
    with open(os.path.join(result.path, "best", "rank0.txt")) as f:
        assert f.read() == "best:2"
    assert result.checkpoint.path.endswith("/best")


@pytest.mark.parametrize("name", ["logs", "metrics.jsonl", ".staging"])
def test_run_folder_names_are_refused(name):
    with pytest.raises(ValueError, match="one of rafter's own in the run folder"):
        train.report({"x": 1}, checkpoint_dir_name=name)


def test_result_from_path_takes_a_pathlib_path(run_config):
    result = fit(named_checkpoints, run_config(name="pl"), n=1, config={"names": ["a"]})
    again = train.Result.from_path(pathlib.Path(result.path))
    assert again.checkpoint == result.checkpoint and again.metrics == {"i": 0}
    assert isinstance(again.filesystem, pafs.LocalFileSystem)  # Ray's default: pyarrow's local filesystem


def storage_facts():
    storage = train.get_context().get_storage()
    rank = train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, f"w{rank}.txt"), "w") as f:
            f.write("x")
        train.report({"rank": rank}, checkpoint=Checkpoint.from_directory(d))
    latest = train.get_checkpoint()
    return {"fs": type(storage.storage_filesystem).__name__, "exp": storage.experiment_fs_path,
            "custom": storage.custom_fs_provided, "name": storage.experiment_dir_name,
            "ckpt_fs": type(latest.filesystem).__name__ if latest else None}


def test_get_storage_without_a_filesystem_is_pyarrow_local(run_config):
    result = fit(storage_facts, run_config(name="st"))
    assert result.return_value == {"fs": "LocalFileSystem", "exp": result.path, "custom": False, "name": "st",
                                   "ckpt_fs": None}


@pytest.mark.parametrize("kind", ["pyarrow", "fsspec"])
def test_storage_filesystem_holds_the_run_folder(tmp_path, kind):
    base = tmp_path / "bucket"
    base.mkdir()
    if kind == "pyarrow":
        fs = pafs.SubTreeFileSystem(str(base), pafs.LocalFileSystem())
    else:
        from fsspec.implementations.dirfs import DirFileSystem
        from fsspec.implementations.local import LocalFileSystem

        fs = DirFileSystem(path=str(base), fs=LocalFileSystem())
    cfg = RunConfig(name="remote", storage_path="runs", storage_filesystem=fs)
    result = fit(storage_facts, cfg)
    assert result.path == "runs/remote" and result.filesystem is fs
    assert sorted(os.listdir(base / "runs" / "remote" / "checkpoint_000001")) == ["w0.txt", "w1.txt"]
    assert result.checkpoint.filesystem is fs
    with result.checkpoint.as_directory() as d:
        assert sorted(os.listdir(d)) == ["w0.txt", "w1.txt"]
    assert result.return_value["fs"] == type(fs).__name__ and result.return_value["custom"] is True
    assert result.return_value["exp"] == "runs/remote"
    again = train.Result.from_path("runs/remote", storage_filesystem=fs)
    assert again.metrics == {"rank": 0} and again.checkpoint.path == "runs/remote/checkpoint_000001"
    # Re-running resumes from that filesystem's latest checkpoint, which workers read through it.
    resumed = fit(storage_facts, RunConfig(name="remote", storage_path="runs", storage_filesystem=fs))
    assert resumed.return_value["ckpt_fs"] == type(fs).__name__
    assert resumed.checkpoint.path == "runs/remote/checkpoint_000002"


def test_storage_filesystem_must_be_a_filesystem():
    with pytest.raises(TypeError, match=r"RunConfig\(storage_filesystem='s3'\): expected a pyarrow.fs.FileSystem"):
        RunConfig(storage_filesystem="s3")


def local_storage():
    s = train.get_context().get_storage()
    return s.experiment_fs_path, type(s.storage_filesystem).__name__


def test_get_storage_in_local_mode(run_config):
    result = TorchTrainer(local_storage, scaling_config=ScalingConfig(num_workers=0),
                          run_config=run_config(name="lst")).fit()
    assert result.return_value == (result.path, "LocalFileSystem")


def test_checkpoint_filesystem_is_honoured_and_checked(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "a.txt").write_text("a")
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    ck = Checkpoint("ck", filesystem=fs)
    assert ck.filesystem is fs
    with ck.as_directory() as d:
        assert os.listdir(d) == ["a.txt"]
    with pytest.raises(TypeError, match=r"Checkpoint\(filesystem=.*expected a pyarrow.fs.FileSystem"):
        Checkpoint("ck", filesystem=object())
