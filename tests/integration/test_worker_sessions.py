"""Each rank runs in a session of its own, as torchrun's workers do.

Where the kernel groups processes for scheduling by session (``sched_autogroup``), ranks that shared the
driver's session shared one group: 2 Llama ranks on 2 cores then ran 2 % slower than torchrun's, which are
each alone in theirs (bench/throughput.py; BENCHMARKS.md has the figures). A kill still reaches a rank's
children (its process group is its session), and a rank still dies with the driver (tests/integration/
test_orphans.py)."""

import os

import torch.distributed as dist

from rafter.train import RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer


def sessions_of_every_rank():
    mine = {"pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0)}
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return every


def test_every_rank_has_its_own_session_and_process_group(tmp_path):
    result = TorchTrainer(sessions_of_every_rank, scaling_config=ScalingConfig(num_workers=3),
                          run_config=RunConfig(name="sessions", storage_path=str(tmp_path))).fit()
    sessions = result.return_value
    assert len({s["pid"] for s in sessions}) == 3, sessions
    for s in sessions:
        assert s["sid"] == s["pid"] == s["pgid"], s  # a session leader, in a process group of its own
    assert os.getsid(0) not in {s["sid"] for s in sessions}  # not the driver's session
