"""WandbCallback in offline mode: a real run's files, read back record by record; resume continues the run."""

import os
import tempfile

import pytest

pytest.importorskip("wandb")

from rafter import train  # noqa: E402
from rafter._cli.errors import ConfigError  # noqa: E402
from rafter._cli.trackers import build_callbacks  # noqa: E402
from rafter.testing import inject_fault  # noqa: E402
from rafter.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig  # noqa: E402
from rafter.train.callbacks import WandbCallback  # noqa: E402
from rafter.train.torch import TorchTrainer  # noqa: E402
from tests.integrations.wandb_files import read_offline_run  # noqa: E402


def four_reports(config):
    start = 0 if train.get_checkpoint() is None else 4
    for i in range(start, start + 4):
        if i % 4 == 3:
            with tempfile.TemporaryDirectory() as d:
                open(os.path.join(d, "i"), "w").write(str(i))
                train.report({"loss": 1.0 / (i + 1), "i": i, "eval": {"acc": i / 10}},
                             checkpoint=Checkpoint.from_directory(d))
        else:
            train.report({"loss": 1.0 / (i + 1), "i": i, "eval": {"acc": i / 10}, "note": "skipped"})


def _fit(tmp_path, callback, kill_rank_1_at=None, attempt=1):
    trainer = TorchTrainer(four_reports, scaling_config=ScalingConfig(num_workers=2),
                           run_config=RunConfig(name="tracked", storage_path=str(tmp_path), callbacks=[callback],
                                                failure_config=FailureConfig(max_failures=1)))
    if kill_rank_1_at is not None:
        inject_fault(trainer, point="report", action="sigkill", rank=1, report=kill_rank_1_at, attempt=attempt)
    return trainer.fit()


def test_offline_run_holds_rank_0_metrics_and_a_resumed_run_continues_it(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    callback = WandbCallback(mode="offline")
    result = _fit(tmp_path, callback)
    wandb_dir = tmp_path / "tracked" / "wandb"
    run, history, summary, exit_ = read_offline_run(str(wandb_dir))
    assert (run.run_id, run.project, run.display_name) == (callback.run_id, "tracked", "tracked")
    assert [step for step, _ in history] == [0, 1, 2, 3]
    assert [h["loss"] for _, h in history] == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert [h["eval/acc"] for _, h in history] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert all("note" not in h for _, h in history)
    assert summary["rafter.latest_checkpoint"] == result.checkpoint.path
    assert summary["rafter.attempt"] == 1 and summary["rafter.num_workers"] == 2
    assert exit_ is not None and exit_.exit_code == 0

    # fit() again with the same name resumes the rafter run: same W&B run id, steps continue at 4. Rank 1
    # is SIGKILLed after its 2nd report there (i=5); rank 0 may report i=6, 7 before the group stops; the
    # restart reports i=4..7 again. Every report is a new step.
    for old in wandb_dir.glob("offline-run-*"):
        old.rename(tmp_path / old.name)
    again = WandbCallback(mode="offline")
    _fit(tmp_path, again, kill_rank_1_at=1, attempt=2)  # attempts are numbered across fit() calls
    run, history, summary, _exit = read_offline_run(str(wandb_dir))
    assert again.run_id == callback.run_id == run.run_id
    got = [h["i"] for _, h in history]
    assert got[:2] == [4, 5] and got[-4:] == [4, 5, 6, 7] and 6 <= len(got) <= 8
    assert [step for step, _ in history] == list(range(4, 4 + len(got)))
    assert summary["rafter.attempt"] == 3
    assert "SIGKILL" in summary["rafter.last_failure"]


def test_job_files_name_it_wandb_and_bad_options_fail_before_training(tmp_path):
    (callback,) = build_callbacks([{"type": "wandb", "mode": "offline", "project": "p"}], "job.yaml")
    assert isinstance(callback, WandbCallback) and (callback.mode, callback.project) == ("offline", "p")
    (plain,) = build_callbacks(["wandb"], "job.yaml")
    assert isinstance(plain, WandbCallback) and plain.mode is None
    with pytest.raises(ConfigError, match="mode='sometimes'"):
        build_callbacks([{"type": "wandb", "mode": "sometimes"}], "job.yaml")
