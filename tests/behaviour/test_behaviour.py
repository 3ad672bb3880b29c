"""One behaviour, two backends: the same train functions and assertions on local processes and on a
real 2-node Ray cluster (RunConfig(cluster="ray"), see tests/ray/cluster_fixtures.py). Real gloo.
"""

import os
import signal
import tempfile

import pytest
import torch
import torch.distributed as dist

import rafter.train as train
from rafter.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchTrainer

N = 4  # on Ray: two workers on each of the two nodes


@pytest.fixture(params=["local", "ray"])
def cluster(request):
    if request.param == "ray":
        pytest.importorskip("ray")
        request.getfixturevalue("ray_cluster")
    return request.param


def fit(fn, cluster, tmp_path, name, config=None, **run):
    run_config = RunConfig(name=name, storage_path=str(tmp_path / "results"), cluster=cluster, **run)
    return TorchTrainer(fn, train_loop_config=config, scaling_config=ScalingConfig(num_workers=N),
                        run_config=run_config).fit()


# -- reports -----------------------------------------------------------------------------------
def reports(config):
    ctx = train.get_context()
    total = torch.tensor([float(ctx.get_world_rank())])
    dist.all_reduce(total)
    for step in range(3):
        train.report({"step": step, "rank": ctx.get_world_rank(), "sum": total.item(), "world": ctx.get_world_size()})
    return ctx.get_world_rank()


def test_rank_0s_reports_are_the_metrics_and_its_value_is_returned(cluster, tmp_path):
    result = fit(reports, cluster, tmp_path, "reports")
    assert result.metrics == {"step": 2, "rank": 0, "sum": 6.0, "world": N}
    steps = [m["step"] for m in result.metrics_history]
    assert steps == [0, 1, 2]
    assert result.return_value == 0 and result.error is None


# -- checkpoints -------------------------------------------------------------------------------
def checkpoints(config):
    rank = train.get_context().get_world_rank()
    start = 0
    ckpt = train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = int(open(os.path.join(d, "step.txt")).read()) + 1
    for step in range(start, config["steps"]):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, f"rank_{rank}.txt"), "w") as f:
                f.write(str(step))
            if rank == 0:
                with open(os.path.join(d, "step.txt"), "w") as f:
                    f.write(str(step))
            train.report({"step": step}, checkpoint=Checkpoint.from_directory(d))
    return start


def test_checkpoints_hold_every_ranks_files_and_a_rerun_resumes_from_the_latest(cluster, tmp_path):
    result = fit(checkpoints, cluster, tmp_path, "ckpt", config={"steps": 2})
    with result.checkpoint.as_directory() as d:
        assert sorted(os.listdir(d)) == sorted(["step.txt"] + [f"rank_{r}.txt" for r in range(N)])
        assert open(os.path.join(d, "rank_3.txt")).read() == "1"
    again = fit(checkpoints, cluster, tmp_path, "ckpt", config={"steps": 4})
    assert again.return_value == 2  # resumed after step 1
    assert again.metrics == {"step": 3}


# -- failures ----------------------------------------------------------------------------------
def fails(config):
    ctx = train.get_context()
    if ctx.get_world_rank() == 2 and ctx.get_attempt() <= config.get("until_attempt", 99):
        how = config["how"]
        if how == "raise":
            raise ValueError("bad batch on rank 2")
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "exit":
            os._exit(3)
        if how == "segfault":
            import ctypes

            ctypes.string_at(0)
    t = torch.ones(1)
    dist.all_reduce(t)  # the other ranks block here until rank 2 is gone
    return ctx.get_attempt()


def test_an_exception_names_its_rank_first_and_the_others_as_consequences(cluster, tmp_path):
    with pytest.raises(TrainingFailedError) as info:
        fit(fails, cluster, tmp_path, "exc", config={"how": "raise"})
    err = info.value
    assert err.rank == 2 and err.kind == "exception"
    assert err.first_line.startswith("Rank 2 (pid ") and "raised ValueError: bad batch on rank 2" in err.first_line
    assert "Traceback" in str(err) and "Consequences" in str(err)


@pytest.mark.parametrize("how, kind, says", [
    ("sigkill", "signal", "was killed by SIGKILL"),
    ("exit", "exit", "exited with code 3"),
    ("segfault", "crash", "crashed with SIGSEGV in native code"),
])
def test_a_dying_worker_is_named_with_how_it_died(cluster, tmp_path, how, kind, says):
    with pytest.raises(TrainingFailedError) as info:
        fit(fails, cluster, tmp_path, how, config={"how": how})
    err = info.value
    assert err.rank == 2, err.first_line
    assert err.kind == kind and says in err.first_line, err.first_line


def test_failure_config_restarts_from_the_latest_checkpoint(cluster, tmp_path):
    def killed_once(config):
        start = checkpoints({"steps": 0})  # resume point only
        ctx = train.get_context()
        for step in range(start, 4):
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "step.txt"), "w") as f:
                    f.write(str(step))
                train.report({"step": step, "attempt": ctx.get_attempt()}, checkpoint=Checkpoint.from_directory(d))
            if step == 1 and ctx.get_attempt() == 1 and ctx.get_world_rank() == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return start

    result = fit(killed_once, cluster, tmp_path, "restart", failure_config=FailureConfig(max_failures=1))
    assert result.metrics == {"step": 3, "attempt": 2}
    assert 1 <= result.return_value <= 2  # resumed after a committed checkpoint, not from scratch
    assert len(result.attempts) == 2 and "Rank 2 " in result.attempts[0]["error"]
    assert "SIGKILL" in result.attempts[0]["error"]


# -- logs --------------------------------------------------------------------------------------
def prints():
    import sys

    rank = train.get_context().get_world_rank()
    print(f"hello from {rank}")
    print(f"warning from {rank}", file=sys.stderr)


def test_output_is_prefixed_by_rank_and_kept_per_rank(cluster, tmp_path, capfd):
    result = fit(prints, cluster, tmp_path, "logs")
    out, err = capfd.readouterr()
    node = {"local": "", "ray": " node 1"}[cluster]  # Ray also names the node
    assert f"[rank 3{node}] hello from 3" in out and f"[rank 3{node}] warning from 3" in err
    with open(os.path.join(result.path, "logs", "rank_3.log")) as f:
        text = f.read()
    assert "hello from 3" in text and "warning from 3" in text
