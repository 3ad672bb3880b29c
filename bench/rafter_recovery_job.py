"""The recovery job of bench/recovery.py under rafter: the same 2-rank DDP MLP as
baselines/torchrun_recovery.py. Attempt 1: rank 1 records the time and SIGKILLs itself at step 5.
Attempt 2: rank 0 records the time its first step completed. Prints RECOVERY_S=.
"""

import os
import signal
import sys
import tempfile
import time

import torch
import torch.nn as nn

from rafter import train
from rafter.train import FailureConfig, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer

STEPS, DIE_AT = 20, 5


def write_ts(path):
    with open(path, "w") as f:
        f.write(repr(time.time()))


def train_func(config):
    ctx = train.get_context()
    rank, attempt = ctx.get_world_rank(), ctx.get_attempt()
    torch.manual_seed(rank)
    model = train.torch.prepare_model(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    for step in range(STEPS):
        if attempt == 1 and rank == 1 and step == DIE_AT:
            write_ts(config["death"])
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = torch.randn(64, 32), torch.randn(64, 1)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if attempt > 1 and rank == 0 and step == 0:
            write_ts(config["first"])
        train.report({"loss": loss.item()})


if __name__ == "__main__":
    death, first = sys.argv[1], sys.argv[2]
    TorchTrainer(train_func, train_loop_config={"death": death, "first": first},
                 scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(name="recovery", storage_path=tempfile.mkdtemp(),
                                      failure_config=FailureConfig(max_failures=1))).fit()
    print(f"RECOVERY_S={float(open(first).read()) - float(open(death).read()):.3f}")
