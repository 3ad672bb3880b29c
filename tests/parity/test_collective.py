"""rafter.train.collective over the driver channel: real worker processes, any backend."""

import subprocess
import sys

import pytest

import rafter.train as train
from rafter.train import ScalingConfig, TrainingFailedError
from rafter.train.collective import barrier, broadcast_from_rank_zero
from rafter.train.torch import TorchTrainer, TorchConfig


def fit(fn, n=2, run_config=None, config=None):
    return TorchTrainer(fn, train_loop_config=config, scaling_config=ScalingConfig(num_workers=n),
                        run_config=run_config).fit()


class Opaque:  # defined in the test module: workers get it by value, the driver never unpickles it
    def __init__(self, v):
        self.v = v


def broadcasts():
    rank = train.get_context().get_world_rank()
    seen = []
    for i in range(3):
        value = broadcast_from_rank_zero({"from": rank, "i": i} if rank == 0 else None)
        seen.append(value)
        barrier()
    obj = broadcast_from_rank_zero(Opaque(rank * 10 + 7))
    train.report({"rank": rank, "seen": seen, "obj": obj.v})
    return seen


def test_broadcast_and_barrier_across_ranks(run_config):
    result = fit(broadcasts, n=3, run_config=run_config(name="bc"))
    expected = [{"from": 0, "i": i} for i in range(3)]
    assert result.return_value == expected
    with open(f"{result.path}/metrics.jsonl") as f:
        assert f.read().count('"obj": 7') == 1  # rank 0's object on rank 0 (only rank 0's reports are written)


def every_rank_checks(config):
    rank = train.get_context().get_world_rank()
    value = broadcast_from_rank_zero("token-%d" % rank)
    assert value == "token-0", (rank, value)
    barrier()
    return rank


def test_every_rank_gets_rank_zeros_value(run_config):
    assert fit(every_rank_checks, n=4, run_config=run_config(name="every")).return_value == 0


BIG_BROADCAST = """
import rafter.train as train
from rafter.train.collective import broadcast_from_rank_zero
from rafter.train.torch import TorchTrainer

def big():
    return len(broadcast_from_rank_zero("x" * 5000))

if __name__ == "__main__":
    result = TorchTrainer(big, scaling_config=train.ScalingConfig(num_workers=2),
                          run_config=train.RunConfig(name="big", storage_path=%r)).fit()
    print("RETURNED", result.return_value)
"""


def test_large_broadcast_warns_like_ray(tmp_path):
    # A user's script (not pytest, whose log capture would swallow the workers' log records).
    script = tmp_path / "big.py"
    script.write_text(BIG_BROADCAST % str(tmp_path / "results"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "RETURNED 5000" in proc.stdout
    assert "[rank 0] [rafter] Data size 5018 bytes exceeds the maximum broadcast size of 1000 bytes" in proc.stderr
    with open(tmp_path / "results" / "big" / "logs" / "rank_0.log") as f:
        assert "exceeds the maximum broadcast size" in f.read()


def rank_zero_only_barrier():
    if train.get_context().get_world_rank() == 0:
        barrier()


def test_a_rank_that_returns_without_the_call_fails_the_waiting_ones(run_config):
    with pytest.raises(TrainingFailedError) as info:
        fit(rank_zero_only_barrier, n=2, run_config=run_config(name="skip"))
    text = str(info.value)
    assert "barrier() call #1 can never complete: rank 1 (after 0 collective call(s)) returned" in text
    assert info.value.rank == 0


def mismatched():
    if train.get_context().get_world_rank() == 0:
        barrier()
    else:
        broadcast_from_rank_zero(None)


def test_different_calls_on_different_ranks_fail_with_both_named(run_config):
    with pytest.raises(TrainingFailedError) as info:
        fit(mismatched, n=2, run_config=run_config(name="mismatch"))
    assert "rank 0: barrier(), rank 1: broadcast_from_rank_zero()" in str(info.value)


def test_collectives_on_the_driver_raise_a_clear_error():
    with pytest.raises(RuntimeError, match="only be called inside the training function"):
        barrier()
    with pytest.raises(RuntimeError, match="collective.broadcast_from_rank_zero"):
        broadcast_from_rank_zero(1)


def unpicklable():
    import threading

    broadcast_from_rank_zero(threading.Lock() if train.get_context().get_world_rank() == 0 else None)


def test_unpicklable_broadcast_names_the_type(run_config):
    with pytest.raises(TrainingFailedError, match="_thread.lock can't be pickled"):
        fit(unpicklable, n=2, run_config=run_config(name="unpick"))
