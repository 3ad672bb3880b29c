"""Whatever dies — workers, many times, or the driver — training ends where an uninterrupted run would."""

import os
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest
import torch

import rafter.train as train
from rafter import _run_folder
from rafter.testing import ChaosMonkey
from rafter.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer
from tests.subprocesses import read_until

STEPS = 16


def _batch(step, rank):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


def deterministic_train(config):
    ctx = train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    start = 0
    ckpt = train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"] + 1
    ddp = train.torch.prepare_model(model)
    for step in range(start, STEPS):
        x, y = _batch(step, rank)
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 2 == 1:
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step},
                               os.path.join(d, "state.pt"))
                train.report({"step": step, "loss": loss.item()},
                             checkpoint=Checkpoint.from_directory(d) if rank == 0 else None)
        else:
            train.report({"step": step, "loss": loss.item()})
        # In step with the driver: a rank killed at report i stops its attempt there. Without this the
        # workers can run ahead of a loaded driver, commit later checkpoints before the kill lands, and
        # the run may finish before the chaos monkey's last kill.
        train.collective.barrier()
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fit(tmp_path, name, monkey=None, max_failures=0):
    t = TorchTrainer(deterministic_train, scaling_config=ScalingConfig(num_workers=2),
                     run_config=RunConfig(name=name, storage_path=str(tmp_path),
                                          failure_config=FailureConfig(max_failures=max_failures)))
    if monkey is not None:
        monkey.attach(t)
    return t.fit()


@pytest.mark.slow
def test_chaos_five_sigkills_end_with_the_uninterrupted_weights(tmp_path):
    reference = _fit(tmp_path, "reference").return_value
    monkey = ChaosMonkey(kills=5, seed=7, max_report=3)
    result = _fit(tmp_path, "chaos", monkey=monkey, max_failures=5)
    assert len(monkey.done) == 5, monkey.done
    assert len(result.attempts) == 6
    assert all("killed by SIGKILL" in a["error"] for a in result.attempts[:5])
    for key, value in reference.items():
        assert torch.equal(result.return_value[key], value), key
    assert result.metrics["step"] == STEPS - 1
    run = tmp_path / "chaos"
    names = sorted(n for n in os.listdir(run) if n.startswith("checkpoint_"))
    assert names and names == [c["name"] for c in _run_folder.read(str(run)).checkpoints]
    for name in names:
        state = torch.load(run / name / "state.pt", weights_only=True)
        assert state["step"] % 2 == 1


DRIVER = textwrap.dedent(
    """
    import os, sys, tempfile, threading, torch
    from rafter import train
    from rafter.train import Checkpoint, RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    def train_func():
        start = 0
        ckpt = train.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                start = torch.load(os.path.join(d, "s.pt"), weights_only=True) + 1
        if train.get_context().get_world_rank() == 0:
            print("START", start, flush=True)
        for step in range(start, 8):
            with tempfile.TemporaryDirectory() as d:
                torch.save(step, os.path.join(d, "s.pt"))
                train.report({"step": step}, checkpoint=Checkpoint.from_directory(d))
            torch.distributed.barrier()  # both ranks reported this step before rank 0 says so
            if train.get_context().get_world_rank() == 0:
                print("STEP", step, flush=True)
            if step == 4 and len(sys.argv) > 2:
                threading.Event().wait()  # hold here until the test kills the driver
        return start

    r = TorchTrainer(train_func, scaling_config=ScalingConfig(num_workers=2),
                     run_config=RunConfig(name="resumable", storage_path=sys.argv[1])).fit()
    print("FINAL", r.metrics["step"], "STARTED_AT", r.return_value, flush=True)
    """
)


def test_driver_sigkilled_then_fit_again_resumes_from_last_committed_checkpoint(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    storage = str(tmp_path / "results")
    proc = subprocess.Popen([sys.executable, str(script), storage, "hold"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    read_until(proc, "STEP 4", timeout=60)
    run_folder, deadline = str(tmp_path / "results" / "resumable"), time.monotonic() + 60
    while len(_run_folder.read(run_folder).checkpoints) < 4:  # the driver may still be reading step 3's reports
        assert time.monotonic() < deadline, "the driver did not commit step 3's checkpoint"
        time.sleep(0.05)
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(family, timeout=5)
    assert family and not alive
    last = _run_folder.read(str(tmp_path / "results" / "resumable")).checkpoints[-1]["name"]
    shown = subprocess.run([sys.executable, "-m", "rafter", "results", str(tmp_path / "results" / "resumable")],
                           capture_output=True, text=True)
    assert f"driver:       gone: driver pid {proc.pid} on host" in shown.stdout, shown.stdout + shown.stderr
    last_step = torch.load(tmp_path / "results" / "resumable" / last / "s.pt", weights_only=True)
    assert last_step in (3, 4)  # step 4's checkpoint commits once both ranks' reports arrived

    again = subprocess.run([sys.executable, str(script), storage], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "Resuming run 'resumable' from " in again.stderr and last in again.stderr
    assert f"taking over run folder {tmp_path / 'results' / 'resumable'} from driver pid {proc.pid} on host" in again.stderr
    assert "which is no longer running" in again.stderr
    assert f"FINAL 7 STARTED_AT {last_step + 1}" in again.stdout
