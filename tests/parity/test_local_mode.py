"""ScalingConfig(num_workers=0): the train function runs in the driver process (Ray's local mode), and as
one rank per process under torchrun."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import rafter.train as train
from rafter.train import Checkpoint, ScalingConfig
from rafter.train.collective import barrier, broadcast_from_rank_zero
from rafter.train.torch import TorchTrainer

HERE_PID = os.getpid()


def fit_local(fn, run_config, config=None):
    return TorchTrainer(fn, train_loop_config=config, scaling_config=ScalingConfig(num_workers=0),
                        run_config=run_config).fit()


def in_driver(config, tmp=None):
    ctx = train.get_context()
    start = train.get_checkpoint()
    first = 0
    if start is not None:
        with start.as_directory() as d, open(os.path.join(d, "step.txt")) as f:
            first = int(f.read()) + 1
    barrier()
    token = broadcast_from_rank_zero("abc")
    for step in range(first, first + config["steps"]):
        d = os.path.join(config["tmp"], f"ckpt{step}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "step.txt"), "w") as f:
            f.write(str(step))
        train.report({"step": step, "token": token}, checkpoint=Checkpoint.from_directory(d))
    train.report({"last": True})  # metrics without a checkpoint are kept too
    return {"pid": os.getpid(), "rank": ctx.get_world_rank(), "world": ctx.get_world_size(),
            "local_rank": ctx.get_local_rank(), "name": ctx.get_experiment_name()}


def test_local_mode_runs_in_this_process_with_the_train_api(run_config, tmp_path):
    result = fit_local(in_driver, run_config(name="lm"), config={"steps": 2, "tmp": str(tmp_path)})
    assert result.return_value == {"pid": HERE_PID, "rank": 0, "world": 1, "local_rank": 0, "name": "lm"}
    assert result.metrics == {"last": True}
    assert [m.get("step") for m in result.metrics_history] == [0, 1, None]
    assert result.checkpoint.path == os.path.join(result.path, "checkpoint_000002")
    with open(os.path.join(result.checkpoint.path, "step.txt")) as f:
        assert f.read() == "1"
    # Re-running with the same name resumes from the latest checkpoint, as with workers.
    again = fit_local(in_driver, run_config(name="lm"), config={"steps": 1, "tmp": str(tmp_path)})
    assert [m.get("step") for m in again.metrics_history][-2:] == [2, None]


def raises():
    train.report({"before": 1})
    raise ValueError("boom in local mode")


def test_local_mode_raises_the_train_functions_own_exception_and_records_it(run_config):
    with pytest.raises(ValueError, match="boom in local mode"):  # as Ray: the exception itself, for pdb
        fit_local(raises, run_config(name="bad"))
    with open(os.path.join(run_config().storage_path, "bad", "rafter_run.json")) as f:
        saved = json.load(f)
    assert saved["status"] == "failed"
    assert "raised ValueError: boom in local mode" in saved["error"]
    failed = train.Result.from_path(os.path.join(run_config().storage_path, "bad"))
    assert failed.metrics == {"before": 1} and "boom in local mode" in str(failed.error)


def test_local_mode_leaves_no_session_behind(run_config):
    fit_local(lambda: train.report({"x": 1}), run_config(name="clean"))
    with pytest.raises(RuntimeError, match="only be called inside the training function"):
        train.get_context()


def test_negative_workers_are_still_refused():
    with pytest.raises(ValueError, match="num_workers=-1"):
        ScalingConfig(num_workers=-1)


TORCHRUN_SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    import torch
    import torch.distributed as dist
    import rafter.train as train
    from rafter.train import Checkpoint, RunConfig, ScalingConfig
    from rafter.train.collective import broadcast_from_rank_zero
    from rafter.train.torch import TorchTrainer

    def train_func():
        ctx = train.get_context()
        rank = ctx.get_world_rank()
        t = torch.tensor([rank + 1.0])
        dist.all_reduce(t)  # the process group torchrun set up
        token = broadcast_from_rank_zero(os.getpid() if rank == 0 else None)
        d = os.path.join(sys.argv[3], f"ck{rank}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"rank{rank}.txt"), "w") as f:
            f.write(str(rank))
        train.report({"rank": rank, "sum": t.item()}, checkpoint=Checkpoint.from_directory(d))
        listed = [os.path.basename(r.checkpoint.path) for r in train.get_all_reported_checkpoints()]
        return {"rank": rank, "world": ctx.get_world_size(), "token": token, "local": ctx.get_local_rank(),
                "listed": listed}

    num_workers = int(sys.argv[1])
    result = TorchTrainer(train_func, scaling_config=ScalingConfig(num_workers=num_workers),
                          run_config=RunConfig(storage_path=sys.argv[2])).fit()
    print("RESULT", json.dumps({"return": result.return_value, "metrics": result.metrics, "path": result.path}))
    """
)


def torchrun(tmp_path, num_workers, timeout=180):
    script = tmp_path / "script.py"
    script.write_text(TORCHRUN_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(num_workers), str(tmp_path / "results"), str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and the ranks it started
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_torchrun_with_num_workers_0_runs_one_rank_per_process_and_one_run_folder(tmp_path):
    proc = torchrun(tmp_path, 0)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    by_rank = {r["return"]["rank"]: r for r in results}
    assert sorted(by_rank) == [0, 1]
    token = by_rank[0]["return"]["token"]
    for rank, r in by_rank.items():
        assert r["return"] == {"rank": rank, "world": 2, "token": token, "local": rank,
                               "listed": ["checkpoint_000001"]}
        assert r["metrics"] == {"rank": rank, "sum": 3.0}  # each rank's Result has its own last metrics
    assert by_rank[0]["path"] == by_rank[1]["path"]
    runs = os.listdir(tmp_path / "results")
    assert len(runs) == 1, runs  # one run folder, named by rank 0
    folder = tmp_path / "results" / runs[0]
    assert sorted(os.listdir(folder / "checkpoint_000001")) == ["rank0.txt", "rank1.txt"]  # both ranks' files
    with open(folder / "metrics.jsonl") as f:
        assert [json.loads(line)["rank"] for line in f] == [0]  # rank 0's reports only


def test_torchrun_with_workers_fails_fast_and_says_how_to_launch(tmp_path):
    proc = torchrun(tmp_path, 2, timeout=120)
    assert proc.returncode != 0
    assert "was started under torchrun" in proc.stderr
    assert "ScalingConfig(num_workers=0)" in proc.stderr and "launch without torchrun" in proc.stderr
    assert not (tmp_path / "results").exists()  # refused before anything was created


def test_workers_refused_under_torchrun_env_in_process(monkeypatch, run_config):
    for name, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                            MASTER_ADDR="127.0.0.1", MASTER_PORT="29999").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"num_workers=2\)\) was started under torchrun \(RANK=0, WORLD_SIZE=2\)"):
        TorchTrainer(lambda: None, scaling_config=ScalingConfig(num_workers=2), run_config=run_config()).fit()
