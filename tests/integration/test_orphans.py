"""No worker outlives its driver: after success, failure, driver SIGKILL and Ctrl-C."""

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time

import psutil

from tests.subprocesses import read_until

DRIVER = textwrap.dedent(
    """
    import os, sys, time
    import torch, torch.distributed as dist
    from rafter import train
    from rafter.train import ScalingConfig, RunConfig
    from rafter.train.torch import TorchTrainer

    def train_func():
        print("READY", os.getpid(), flush=True)
        t = torch.ones(1)
        while True:              # a training loop that never ends on its own
            dist.all_reduce(t)
            time.sleep(0.01)

    TorchTrainer(train_func, scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(name="orphans", storage_path=sys.argv[1])).fit()
    """
)


def _start_driver(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "results")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    started = time.monotonic()
    fd = proc.stdout.fileno()
    text = ""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    while text.count("READY") < 2:
        assert time.monotonic() < deadline, f"workers never became ready: {text}"
        if sel.select(timeout=max(0.0, deadline - time.monotonic())):
            chunk = os.read(fd, 65536)
            assert chunk, f"driver exited early: {text}"
            text += chunk.decode()
    sel.close()
    pids = [int(line.split()[-1]) for line in text.splitlines() if "READY" in line]
    return proc, [psutil.Process(p) for p in pids], time.monotonic() - started


def bound(seconds, startup):
    """``seconds`` on an idle machine; on a loaded one, stopping may take as long as starting took."""
    return max(seconds, startup)


def _all_processes_of(proc):
    return [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)


def test_driver_sigkill_leaves_no_worker(tmp_path):
    proc, workers, startup = _start_driver(tmp_path)
    everything = _all_processes_of(proc)
    assert len(everything) >= 4  # driver, zygote, 2 workers
    limit = bound(2.0, startup)
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(everything[1:], timeout=limit)
    for p in alive:
        p.kill()
    assert not alive, f"still running {limit:.1f} s after the driver was SIGKILLed: {alive}"
    assert time.monotonic() - t0 < limit + 0.5


def test_ctrl_c_twice_stops_all_workers_within_2s(tmp_path):
    """The first Ctrl-C gives the workers their preemption window (tests/integration/test_preemption.py);
    the second stops everything at once."""
    proc, workers, startup = _start_driver(tmp_path)
    everything = _all_processes_of(proc)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C: the driver's process group
    read_until(proc, "press Ctrl-C again")
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=10)[0].decode()
    elapsed = time.monotonic() - t0
    gone, alive = psutil.wait_procs(everything[1:], timeout=0.5)
    assert not alive, f"workers survived Ctrl-C: {alive}"
    assert elapsed < bound(2.0, startup), f"Ctrl-C took {elapsed:.2f} s to stop the run (it started in {startup:.2f} s)"
    assert "KeyboardInterrupt" in out
    assert proc.returncode != 0
