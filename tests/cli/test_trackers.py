"""TensorBoard and MLflow trackers: real files written during a real run, read back with each tool's reader."""

import glob
import json
import os
import sys

import pytest

from rafter import train
from rafter.train import RunConfig, ScalingConfig
from rafter.train.callbacks import MLflowCallback, TensorBoardCallback, scalar_metrics
from rafter.train.torch import TorchTrainer
from tests.cli.conftest import FUNCS, rafter


def five_reports(config):
    for i in range(5):
        train.report({"loss": 1.0 / (i + 1), "step": i, "eval": {"acc": i / 10}, "note": "text is skipped"})


def scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir)
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_and_mlflow_record_rank_0_metrics(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the callback sets it too; monkeypatch restores it

    uri = f"file://{tmp_path}/mlruns"
    tb = TensorBoardCallback(logdir=str(tmp_path / "tb"))
    ml = MLflowCallback(tracking_uri=uri, experiment_name="rafter-test")
    result = TorchTrainer(
        five_reports,
        scaling_config=ScalingConfig(num_workers=2),
        run_config=RunConfig(name="tracked", storage_path=str(tmp_path / "results"), callbacks=[tb, ml]),
    ).fit()
    assert len(result.metrics_history) == 5

    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    loss = scalars(str(tmp_path / "tb"), "loss")
    got = [s for s, _v in loss]
    assert got == [0, 1, 2, 3, 4]
    got = [v for _s, v in loss]
    assert got == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.2])
    got = [v for _s, v in scalars(str(tmp_path / "tb"), "eval/acc")]
    assert got == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("rafter-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == ml.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tracked"
    assert run.data.tags["rafter.run_path"] == result.path
    history = client.get_metric_history(run.info.run_id, "loss")
    got = [(m.step, m.value) for m in history]
    assert got == [(i, pytest.approx(1.0 / (i + 1))) for i in range(5)]
    assert run.data.metrics["eval/acc"] == pytest.approx(0.4)
    assert "note" not in run.data.metrics


def test_missing_libraries_fail_early_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardCallback()
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ImportError, match="pip install mlflow"):
        MLflowCallback()


def test_scalar_metrics_flattens_and_skips_non_numbers():
    got = dict(scalar_metrics({"a": 1, "b": True, "c": "x", "d": {"e": 2.5, "f": float("nan")}, "g": None}))
    assert got == {"a": 1.0, "d/e": 2.5}


def test_job_file_callbacks_write_tensorboard_events_into_the_run_folder(tmp_path, write, monkeypatch):
    job = write("job.yaml", (
        f"train: {FUNCS}:steps\ncluster: local\ntrain_loop_config: {{steps: 3}}\n"
        f"run:\n  storage_path: {tmp_path}\n  name: tb\n  callbacks:\n    - tensorboard\n"
        f"    - type: mlflow\n      tracking_uri: file://{tmp_path}/mlruns\n      experiment_name: from-yaml\n"
        f"    - {{type: wandb, mode: offline}}\n"
    ))
    proc = rafter("run", job, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["num_reports"] == 3
    logdir = str(tmp_path / "tb" / "tensorboard")
    got = [s for s, _v in scalars(logdir, "loss")]
    assert got == [0, 1, 2]
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this reader; the callback set it in rafter's process
    client = MlflowClient(tracking_uri=f"file://{tmp_path}/mlruns")
    (run,) = client.search_runs([client.get_experiment_by_name("from-yaml").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "step")) == 3
    assert os.path.isdir(logdir)
    from tests.integrations.wandb_files import read_offline_run

    wandb_run, history, _summary, _exit = read_offline_run(str(tmp_path / "tb" / "wandb"))
    assert (wandb_run.project, wandb_run.display_name) == ("tb", "tb")  # the run's name by default
    got = [step for step, _ in history]
    assert got == [0, 1, 2]
