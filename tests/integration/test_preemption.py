"""Preemption: a SIGTERM (to the driver or to a worker) or a first Ctrl-C is a notice, not a death.

The train function sees ``train.get_preemption_info()``, reports a just-in-time checkpoint, and the run
either restarts from it (a worker's SIGTERM, charged to ``max_preemption_failures``) or ends "preempted"
(the driver's SIGTERM or Ctrl-C) so that the next invocation resumes from it. Real processes, real gloo.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest
import torch
import torch.distributed as dist

import rafter.train as train
from rafter import _run_folder
from rafter.train import Checkpoint, FailureConfig, PreemptionError, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer
from tests.subprocesses import read_until


def preemptible(config):
    """Steps in lockstep; on a preemption notice, one checkpoint (and training goes on until stopped)."""
    rank = train.get_context().get_world_rank()
    start = 0
    ckpt = train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            with open(os.path.join(d, "state.json")) as f:
                start = json.load(f)["step"] + 1
    print("START", rank, start, flush=True)
    saved = False
    t = torch.ones(1)
    for step in range(start, config["steps"]):
        dist.all_reduce(t)
        if step == config.get("sigterm_at") and rank == config.get("sigterm_rank", 1) and ckpt is None:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler does to one process
        info = train.get_preemption_info()
        if info is not None and not saved:
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
                train.report({"step": step, "preempted_ranks": info.preempted_ranks, "reason": info.reason,
                              "left_s": info.deadline_ms / 1000 - time.time()},
                             checkpoint=Checkpoint.from_directory(d))
            saved = True
        else:
            train.report({"step": step})
        if rank == 0:
            print("STEP", step, flush=True)
    return start


def _fit(tmp_path, config, **failure):
    failure.setdefault("preemption_grace_s", 60)
    return TorchTrainer(preemptible, train_loop_config=config, scaling_config=ScalingConfig(num_workers=2),
                        run_config=RunConfig(name="run", storage_path=str(tmp_path / "results"),
                                             failure_config=FailureConfig(**failure))).fit()


def test_a_sigterm_to_one_worker_saves_then_restarts_on_the_preemption_budget(tmp_path):
    result = _fit(tmp_path, {"steps": 12, "sigterm_at": 4}, max_failures=0)
    assert result.metrics["step"] == 11
    assert len(result.attempts) == 2
    first = result.attempts[0]["error"]
    assert first.startswith("Preempted: SIGTERM to rank 1"), first
    saved = result.metrics_history[5] if "preempted_ranks" in result.metrics_history[5] else next(
        m for m in result.metrics_history if "preempted_ranks" in m)
    assert saved["preempted_ranks"] == [1] and saved["reason"].startswith("SIGTERM to rank 1")
    assert 0 < saved["left_s"] <= 60
    assert result.return_value == saved["step"] + 1  # attempt 2 resumed right after the just-in-time checkpoint


def test_without_a_preemption_budget_the_run_ends_preempted(tmp_path):
    with pytest.raises(PreemptionError) as info:
        _fit(tmp_path, {"steps": 10_000, "sigterm_at": 2}, max_preemption_failures=0)
    err = info.value
    assert err.kind == "preempted" and err.preemption_info.preempted_ranks == [1]
    assert err.first_line.startswith("Preempted: SIGTERM to rank 1"), err.first_line
    assert "max_preemption_failures" in str(err)
    record = _run_folder.read(str(tmp_path / "results" / "run"))
    assert record.status == "preempted"
    assert record.checkpoints, "the just-in-time checkpoint was committed"


DRIVER = textwrap.dedent("""
    import sys
    from rafter.train import FailureConfig, RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer
    from tests.integration.test_preemption import preemptible

    result = TorchTrainer(preemptible, train_loop_config={"steps": int(sys.argv[2])},
                          scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(name="run", storage_path=sys.argv[1],
                                               failure_config=FailureConfig(preemption_grace_s=60))).fit()
    print("RESUMED AT", result.return_value, flush=True)
""")


def _start(tmp_path, steps):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "results"), str(steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_the_driver_stopped_from_outside_saves_ends_preempted_and_the_next_invocation_resumes(tmp_path, how):
    proc = _start(tmp_path, 10_000_000)
    read_until(proc, "STEP 3")
    everything = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    t0 = time.monotonic()
    if how == "sigterm":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: the driver's process group
    out = proc.communicate(timeout=120)[0].decode()
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0 and "PreemptionError: Preempted:" in out, out[-3000:]
    assert elapsed < 30, f"the stop took {elapsed:.1f} s although the checkpoint was in long before the 60 s deadline"
    gone, alive = psutil.wait_procs(everything[1:], timeout=5)
    assert not alive, f"processes survived the preemption: {alive}"
    record = _run_folder.read(str(tmp_path / "results" / "run"))
    assert record.status == "preempted"
    history = [json.loads(line) for line in open(tmp_path / "results" / "run" / "metrics.jsonl")]
    saved = [m for m in history if "preempted_ranks" in m]
    assert len(saved) == 1 and saved[0]["preempted_ranks"] == [0, 1]
    saved_step = saved[0]["step"]

    again = _start(tmp_path, saved_step + 3)
    out = again.communicate(timeout=120)[0].decode()
    assert again.returncode == 0, out[-3000:]
    assert f"RESUMED AT {saved_step + 1}" in out, out[-3000:]


def test_rafter_run_exits_75_when_preempted_and_results_say_so(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(textwrap.dedent(f"""
        train: {os.path.abspath(__file__)}:preemptible
        train_loop_config: {{steps: 10000000}}
        scaling: {{num_workers: 2}}
        run: {{name: cli, storage_path: {tmp_path / 'results'}}}
        failure: {{preemption_grace_s: 60}}
    """))
    proc = subprocess.Popen([sys.executable, "-m", "rafter", "run", str(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    read_until(proc, "STEP 2")
    os.kill(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 75, out[-3000:]
    assert "the run was preempted" in out
    shown = subprocess.run([sys.executable, "-m", "rafter", "results", str(tmp_path / "results" / "cli")],
                           capture_output=True, text=True, timeout=60)
    assert "preempted" in shown.stdout + shown.stderr, shown.stdout + shown.stderr
