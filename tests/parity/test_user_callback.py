"""Ray's UserCallback hooks: after_report with one metrics dict per rank, after_exception per rank."""

import os
import tempfile

import pytest

import rafter.train as train
from rafter.train import Callback, Checkpoint, FailureConfig, ScalingConfig, TrainingFailedError, UserCallback
from rafter.train.torch import TorchTrainer


class Recorder(UserCallback):
    def __init__(self):
        self.reports = []
        self.exceptions = []
        self.contexts = []

    def after_report(self, run_context, metrics, checkpoint):
        self.contexts.append(run_context)
        self.reports.append((metrics, checkpoint))

    def after_exception(self, run_context, worker_exceptions):
        self.exceptions.append(worker_exceptions)


class RafterHooks(Callback):
    def __init__(self):
        self.seen = []

    def after_report(self, *, metrics, rank, run_path):
        self.seen.append(metrics)


def reports_twice():
    rank = train.get_context().get_world_rank()
    train.report({"step": 0, "rank": rank})
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, f"w{rank}.txt"), "w") as f:
            f.write("x")
        train.report({"step": 1, "rank": rank}, checkpoint=Checkpoint.from_directory(d))


@pytest.mark.parametrize("num_workers", [3, 0])
def test_after_report_gets_every_ranks_metrics_and_the_committed_checkpoint(run_config, num_workers):
    rec, hooks = Recorder(), RafterHooks()
    cfg = run_config(name=f"cb{num_workers}", callbacks=[rec, hooks])
    result = TorchTrainer(reports_twice, scaling_config=ScalingConfig(num_workers=num_workers),
                          train_loop_config={"lr": 0.1}, run_config=cfg).fit()
    ranks = range(max(1, num_workers))
    assert [m for m, _ in rec.reports] == [[{"step": s, "rank": r} for r in ranks] for s in (0, 1)]
    assert rec.reports[0][1] is None
    assert rec.reports[1][1] == result.checkpoint
    assert sorted(os.listdir(result.checkpoint.path)) == [f"w{r}.txt" for r in ranks]
    ctx = rec.contexts[0]
    assert ctx.get_run_config() is cfg and ctx.train_loop_config == {"lr": 0.1}
    assert ctx.scaling_config.num_workers == num_workers
    assert hooks.seen == [{"step": 0, "rank": 0}, {"step": 1, "rank": 0}]  # rafter's hooks still fire
    assert rec.exceptions == []


class Boom(Exception):
    pass


def fails_on_rank_one():
    rank = train.get_context().get_world_rank()
    if rank == 1:
        raise Boom(f"rank {rank} blew up")
    import time

    time.sleep(60)  # stopped by rafter after rank 1 fails


def test_after_exception_gets_the_failed_ranks_exception(run_config):
    rec = Recorder()
    with pytest.raises(TrainingFailedError):
        TorchTrainer(fails_on_rank_one, scaling_config=ScalingConfig(num_workers=2),
                     run_config=run_config(name="exc", callbacks=[rec],
                                           failure_config=FailureConfig(max_failures=1))).fit()
    assert len(rec.exceptions) == 2  # once per failed attempt
    for excs in rec.exceptions:
        assert list(excs) == [1]  # rank 0 was stopped by rafter, not a failure of its own
        assert type(excs[1]).__name__ == "Boom" and str(excs[1]) == "rank 1 blew up"


def local_fails():
    raise Boom("local")


def test_after_exception_in_local_mode(run_config):
    rec = Recorder()
    with pytest.raises(Boom):
        TorchTrainer(local_fails, scaling_config=ScalingConfig(num_workers=0),
                     run_config=run_config(name="lexc", callbacks=[rec])).fit()
    assert [list(e) for e in rec.exceptions] == [[0]]
    assert isinstance(rec.exceptions[0][0], Boom)
