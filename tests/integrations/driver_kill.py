"""Kill a driver while its workers hold after a committed checkpoint, then run the same driver again."""

import os
import subprocess
import sys
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DRIVER = """
import sys
import {preload}  # imported once here, so the workers forked from this driver have it
from rafter.train import RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer
from tests.integrations.tiny import {fn}

config = {{"output_dir": sys.argv[1] + "/out", "hold_at": {hold_at} if len(sys.argv) > 2 else None}}
result = TorchTrainer({fn}, train_loop_config=config, scaling_config=ScalingConfig(num_workers=2),
                      run_config=RunConfig(name="resumable", storage_path=sys.argv[1])).fit()
print("RESUMED_AT", result.return_value["resumed_at"], "FINAL", result.metrics[{final_metric!r}], flush=True)
"""


def _wait_for_checkpoints(run_folder: str, proc: subprocess.Popen, count: int, log, timeout_s: float = 90) -> str:
    """The name of the latest committed checkpoint, once the run folder lists ``count`` of them."""
    from rafter import _run_folder

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            checkpoints = _run_folder.read(run_folder).checkpoints
        except Exception:  # noqa: BLE001 - not written yet
            checkpoints = []
        if len(checkpoints) >= count:
            return checkpoints[-1]["name"]
        try:  # the poll interval, which also notices a driver that ended early
            proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"the driver ended early with exit code {proc.returncode}:\n{log.read_text()[-3000:]}")
    raise AssertionError(f"{count} checkpoints not committed within {timeout_s} s in {run_folder}")


def kill_then_resume(tmp_path, fn: str, *, preload: str, hold_at: int, num_checkpoints: int, final_metric: str):
    """Run a driver of ``tests.integrations.tiny.<fn>`` whose workers hold at ``hold_at``; SIGKILL it once
    ``num_checkpoints`` checkpoints are committed (checking no worker outlives it), then run it again
    without the hold. Returns (the last committed checkpoint's name, the second run's CompletedProcess),
    after checking that the second run resumed from that checkpoint and succeeded."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(preload=preload, fn=fn, hold_at=hold_at, final_metric=final_metric))
    storage = str(tmp_path / "results")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "first_driver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(script), storage, "hold"], stdout=out, stderr=out, env=env)
    try:
        name = _wait_for_checkpoints(os.path.join(storage, "resumable"), proc, num_checkpoints, log)
        family = psutil.Process(proc.pid).children(recursive=True)
    finally:
        proc.kill()
        proc.wait()
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert family and not alive, alive
    again = subprocess.run([sys.executable, str(script), storage], capture_output=True, text=True, timeout=120,
                           env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming run 'resumable' from " in again.stderr and name in again.stderr, again.stderr[-3000:]
    return name, again
