"""Ranks out of step in their collectives, produced for real with gloo: the verdict's first line names
the rank that caused it and how, within a second of the fault (or of the timeout, for a straggler)."""

import threading
import time

import pytest
import torch
import torch.distributed as dist

import rafter.train as train
from rafter.train import RunConfig, ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchConfig, TorchTrainer


def run(fn, n, tmp_path, config=None, torch_config=None, **run_kwargs):
    t = TorchTrainer(fn, train_loop_config=config, torch_config=torch_config,
                     scaling_config=ScalingConfig(num_workers=n),
                     run_config=RunConfig(name="coll", storage_path=str(tmp_path), **run_kwargs))
    with pytest.raises(TrainingFailedError) as info:
        t.fit()
    return info.value, time.time()


def _stamp(config):
    with open(config["stamp"], "w") as f:
        f.write(repr(time.time()))


def _detected_within(stamp_path, raised, limit=1.0, after=0.0):
    latency = raised - float(open(stamp_path).read()) - after
    assert latency <= limit, f"{latency:.2f} s from the fault to fit() raising"


def uneven_ddp(config):
    rank = train.get_context().get_world_rank()
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = 7 if rank == 2 else 8
    for step in range(batches):
        loss = model(torch.ones(4, 8)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        train.report({"step": step})
    if rank == 2:
        _stamp(config)


def test_uneven_data_names_the_rank_that_left_the_loop(tmp_path):
    stamp = tmp_path / "left"
    err, raised = run(uneven_ddp, 3, tmp_path, config={"stamp": str(stamp)})
    first = err.first_line
    assert first.startswith("Rank 2 (pid "), first
    assert "returned at report 7 while ranks 0, 1 were still in all_reduce #" in first
    assert "it left the training loop after 7 batches" in first and "uneven data" in first
    assert "drop_last" in str(err).split("Likely fix:", 1)[1]
    assert "ranks 0, 1: lost the connection to a failed peer" in str(err).split("Consequences", 1)[1]
    assert err.kind == "out_of_step" and err.rank == 2
    _detected_within(stamp, raised)


def returns_early(config):
    rank = train.get_context().get_world_rank()
    t = torch.ones(2)
    for step in range(10):
        dist.all_reduce(t)
        train.report({"step": step})
        if rank == 0 and step == 4:
            _stamp(config)
            return


def test_a_rank_that_returned_early_is_the_cause_not_the_peer_errors(tmp_path):
    stamp = tmp_path / "returned"
    err, raised = run(returns_early, 4, tmp_path, config={"stamp": str(stamp)})
    first = err.first_line
    assert first.startswith("Rank 0 (pid "), first
    assert "returned at report 5 while ranks 1–3 were still in all_reduce #" in first
    assert "Connection" not in first
    assert err.rank == 0 and err.kind == "out_of_step"
    _detected_within(stamp, raised)


def mismatched(config):
    rank = train.get_context().get_world_rank()
    for step in range(6):
        odd = rank == 1 and step == 2
        if odd:
            _stamp(config)
        if config["what"] == "shape":
            t = torch.ones(4 if odd else 3)
        else:
            t = torch.ones(3, dtype=torch.float64 if odd else torch.float32)
        dist.all_reduce(t)
        train.report({"step": step})


def test_mismatched_shapes_name_the_rank_and_both_shapes(tmp_path):
    stamp = tmp_path / "shape"
    err, raised = run(mismatched, 4, tmp_path, config={"what": "shape", "stamp": str(stamp)})
    first = err.first_line
    assert first.startswith("Rank 1 (pid "), first
    assert "got shape [4] on rank 1" in first and "and [3] on ranks 0, 2, 3" in first, first
    assert err.kind == "collective_mismatch"
    _detected_within(stamp, raised)


def test_mismatched_dtypes_are_named_not_a_native_crash(tmp_path):
    stamp = tmp_path / "dtype"
    err, raised = run(mismatched, 4, tmp_path, config={"what": "dtype", "stamp": str(stamp)})
    first = err.first_line
    assert first.startswith("Rank 1 (pid "), first
    assert "got dtype float64 on rank 1 and float32 on ranks" in first, first
    assert "SIGABRT" not in first and err.kind == "collective_mismatch"
    _detected_within(stamp, raised)


def straggles(config):
    rank = train.get_context().get_world_rank()
    t = torch.ones(2)
    for step in range(4):
        if step == 2:
            if rank == 3:
                threading.Event().wait(25)  # far past TorchConfig(timeout_s=5)
            elif rank == 0:
                _stamp(config)
        dist.all_reduce(t)
        train.report({"step": step})


def test_a_straggler_past_the_timeout_is_named_with_its_stack(tmp_path):
    stamp = tmp_path / "entered"
    err, raised = run(straggles, 4, tmp_path, config={"stamp": str(stamp)}, torch_config=TorchConfig(timeout_s=5))
    first = err.first_line
    assert first.startswith("Rank 3 (pid "), first
    assert "had not reached all_reduce #" in first and "after ranks 0–2 entered it (timeout 5 s)" in first, first
    assert "Timed out" not in first and err.kind == "straggler"
    text = str(err)
    assert "Stack of rank 3" in text and "in straggles" in text
    assert "Timed out" in text.split("Consequences", 1)[1] or "timed out" in text.split("Consequences", 1)[1].lower()
    _detected_within(stamp, raised, after=5.0)


def uneven_ddp_then(config):
    rank = train.get_context().get_world_rank()
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2))
    for step in range(7 if rank == 2 else 8):
        model(torch.ones(4, 8)).sum().backward()
        train.report({"step": step})
    if rank == 2:
        _stamp(config)
        if config["then"] == "barrier":
            dist.barrier()  # e.g. "wait for the others before saving"
        else:
            threading.Event().wait()  # anything that is not a collective: evaluation, saving, ...
    dist.barrier()


def test_uneven_data_then_a_barrier_names_the_rank_in_the_other_collective(tmp_path):
    """The short rank's barrier meets the others' gradient all-reduce inside loss.backward(): it hangs
    silently in gloo; rafter compares the ranks' collectives as soon as they all go quiet."""
    stamp = tmp_path / "left"
    err, raised = run(uneven_ddp_then, 3, tmp_path, config={"stamp": str(stamp), "then": "barrier"})
    first = err.first_line
    assert first.startswith("Rank 2 (pid "), first
    assert "left the training loop after 7 batches and called barrier #" in first, first
    assert "while ranks 0, 1 wait in all_reduce #" in first and "uneven data" in first
    _detected_within(stamp, raised)


def test_a_hang_blames_the_rank_outside_the_gradient_all_reduce(tmp_path):
    """Ranks waiting in DDP's all-reduce inside loss.backward() are waiting in a collective, although their
    stacks show only backward(): the rank that is elsewhere is the one named."""
    stamp = tmp_path / "left"
    err, raised = run(uneven_ddp_then, 3, tmp_path, config={"stamp": str(stamp), "then": "wait"}, hang_timeout_s=3)
    first = err.first_line
    assert first.startswith("Rank 2 (pid "), first
    assert "hung: no progress" in first and "threading.Event().wait()" in first
    assert "while ranks 0, 1 wait in all_reduce #" in first and "it made 7 such calls before" in first, first
    assert err.rank == 2 and err.kind == "hang"
    _detected_within(stamp, raised, after=3.0)
