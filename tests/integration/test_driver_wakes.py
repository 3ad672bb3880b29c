"""A run that reports every few milliseconds wakes the driver about once per POLL_S, not once per report
or more: each wake takes a core from a rank for a moment, which every other rank then waits for at its
next collective. Counted for real: the driver's poll() calls during a fit of 2 workers."""

import threading
import time

import torch
import torch.distributed as dist

import rafter.train as train
from rafter._backends.local import group as local_group
from rafter._controller import controller as controller_mod
from rafter.train import RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer

SECONDS = 4.0


def reports_often(config):
    t = torch.ones(1)
    dist.all_reduce(t)  # both ranks start together
    end, i = time.monotonic() + config["seconds"], 0
    while time.monotonic() < end:
        train.report({"i": i})
        i += 1
        threading.Event().wait(0.004)  # a step of 4 ms
    train.report({"i": i, "last": True})
    return i + 1


def test_a_run_that_reports_every_few_ms_wakes_the_driver_about_once_a_period(tmp_path, monkeypatch):
    calls = []
    poll = local_group.LocalWorkerGroup.poll

    def counted(self, timeout):
        out = poll(self, timeout)
        calls.append((time.monotonic(), len(out)))
        return out

    monkeypatch.setattr(local_group.LocalWorkerGroup, "poll", counted)
    result = TorchTrainer(reports_often, train_loop_config={"seconds": SECONDS},
                          scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(name="wakes", storage_path=str(tmp_path))).fit()
    sent = result.return_value
    assert result.metrics.get("last") is True and result.metrics["i"] == sent - 1  # nothing lost, last is last
    assert sent > 200  # it did report every few ms

    # The wakes while the ranks reported: from the first report's batch to the last one's.
    busy = [t for t, n in calls if n]
    middle = [t for t, _ in calls if busy[0] + 0.3 < t < busy[-1] - 0.3]
    span = busy[-1] - busy[0] - 0.6
    per_period = len(middle) / (span / controller_mod.POLL_S)
    assert per_period <= 1.5, f"{len(middle)} wakes in {span:.2f} s ({per_period:.2f} per POLL_S)"
    empty = [round(t - busy[0], 3) for t, n in calls if busy[0] + 0.3 < t < busy[-1] - 0.3 and not n]
    assert not empty, f"wakes that found nothing to do, at {empty} s"  # a lane whose rest ends is read in that wake
