"""Repeated fit() in one process reuses one warm zygote while it still matches the driver
(rafter/_backends/local/warm.py), and makes a new one when it does not."""

import importlib
import os
import sys
import threading

import psutil
import pytest
import torch
import torch.distributed as dist

import rafter.train as train
from rafter._backends.local import warm
from rafter.train import RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer


def job(config):
    total = torch.ones(1)
    dist.all_reduce(total)
    extra = {}
    if config and config.get("module"):
        extra["answer"] = importlib.import_module(config["module"]).ANSWER
    train.report({"world": total.item(), "env": os.environ.get("RAFTER_TEST_WARM", ""),
                  "zygote": os.getppid(), **extra})


def fit(tmp_path, name, config=None, workers=2):
    return TorchTrainer(job, train_loop_config=config, scaling_config=ScalingConfig(num_workers=workers),
                        run_config=RunConfig(name=name, storage_path=str(tmp_path / "results"))).fit()


def test_a_second_fit_reuses_the_zygote_and_a_third_after_an_env_change_does_not(tmp_path, monkeypatch):
    first = fit(tmp_path, "a")
    zygote = warm.warm_pid()
    assert zygote is not None and first.metrics["zygote"] == zygote
    second = fit(tmp_path, "b", workers=3)
    assert second.metrics["world"] == 3.0 and second.metrics["zygote"] == zygote
    assert not psutil.pid_exists(first.metrics["zygote"]) or warm.warm_pid() == zygote
    monkeypatch.setenv("RAFTER_TEST_WARM", "changed")
    third = fit(tmp_path, "c")
    assert third.metrics["env"] == "changed"
    assert third.metrics["zygote"] != zygote and not psutil.pid_exists(zygote)


def test_an_edited_and_reloaded_module_gets_a_fresh_zygote(tmp_path, monkeypatch):
    pkg = tmp_path / "mods"
    pkg.mkdir()
    (pkg / "warm_answer.py").write_text("ANSWER = 1\n")
    monkeypatch.syspath_prepend(str(pkg))
    module = importlib.import_module("warm_answer")
    try:
        first = fit(tmp_path, "a", config={"module": "warm_answer"})
        assert first.metrics["answer"] == 1
        (pkg / "warm_answer.py").write_text("ANSWER = 2\n")
        os.utime(pkg / "warm_answer.py", (0, os.stat(pkg / "warm_answer.py").st_mtime + 5))
        importlib.reload(module)
        second = fit(tmp_path, "b", config={"module": "warm_answer"})
        assert second.metrics["answer"] == 2
        assert second.metrics["zygote"] != first.metrics["zygote"]
    finally:
        sys.modules.pop("warm_answer", None)


def test_fits_leave_fds_threads_and_children_as_after_the_first(tmp_path):
    me = psutil.Process()
    fit(tmp_path, "f0")
    after_first = (me.num_fds(), threading.active_count(), len(me.children(recursive=True)))
    for i in range(1, 5):
        fit(tmp_path, f"f{i}")
    # the warm zygote's workers of the last fit may still be going (killed, not yet reaped): wait for them
    zygote = psutil.Process(warm.warm_pid())
    psutil.wait_procs(zygote.children(recursive=True), timeout=5)
    after_last = (me.num_fds(), threading.active_count(), len(me.children(recursive=True)))
    assert after_last == after_first, f"after fit 1 {after_first}, after fit 5 {after_last} (fds, threads, children)"


def test_a_failed_fit_leaves_no_worker_in_the_warm_zygote(tmp_path):
    def fails(config):
        if train.get_context().get_world_rank() == 1:
            raise ValueError("rank 1 fails")
        dist.barrier()

    with pytest.raises(train.WorkerGroupError, match="rank 1 fails"):
        TorchTrainer(fails, scaling_config=ScalingConfig(num_workers=3),
                     run_config=RunConfig(name="bad", storage_path=str(tmp_path / "results"))).fit()
    zygote = psutil.Process(warm.warm_pid())
    gone, alive = psutil.wait_procs(zygote.children(recursive=True), timeout=5)
    assert not alive, f"workers of the failed fit still alive in the warm zygote: {[p.pid for p in alive]}"
    assert fit(tmp_path, "good").metrics["world"] == 2.0
