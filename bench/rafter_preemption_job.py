"""The preemption case of bench/recovery.py under rafter: the recovery job's 2-rank DDP MLP, where rank 1
gets a SIGTERM at step 5 of attempt 1 (as a scheduler sends it). Every step asks
train.get_preemption_info(); on the notice each rank reports a just-in-time checkpoint, rafter stops the
group and restarts it from that checkpoint (FailureConfig(max_preemption_failures=-1), max_failures=0).
Writes the SIGTERM time, the time the checkpoint was written (handed to report()) and the restarted group's first step.
"""

import json
import os
import signal
import sys
import tempfile
import time

import torch
import torch.nn as nn

from rafter import train
from rafter.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer

STEPS, SIGTERM_AT = 40, 5


def write_ts(path):
    with open(path, "w") as f:
        f.write(repr(time.time()))


def train_func(config):
    ctx = train.get_context()
    rank, attempt = ctx.get_world_rank(), ctx.get_attempt()
    torch.manual_seed(rank)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
    start = 0
    ckpt = train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, "model.pt"), weights_only=True)
            model.load_state_dict(state["model"])
            start = state["step"] + 1
    ddp = train.torch.prepare_model(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-2)
    saved = False
    for step in range(start, STEPS):
        if attempt == 1 and rank == 1 and step == SIGTERM_AT:
            write_ts(config["sigterm"])
            os.kill(os.getpid(), signal.SIGTERM)
        x, y = torch.randn(64, 32), torch.randn(64, 1)
        loss = nn.functional.mse_loss(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if attempt > 1 and rank == 0 and step == start:
            write_ts(config["first"])
        if train.get_preemption_info() is not None and not saved:
            saved = True
            with tempfile.TemporaryDirectory() as d:
                if rank == 0:
                    torch.save({"model": model.state_dict(), "step": step}, os.path.join(d, "model.pt"))
                    write_ts(config["saved"])  # before report(): rafter may stop the group as soon as it is in
                train.report({"loss": loss.item()}, checkpoint=Checkpoint.from_directory(d) if rank == 0 else None)
        else:
            train.report({"loss": loss.item()})


if __name__ == "__main__":
    sigterm, saved, first = sys.argv[1:4]
    TorchTrainer(train_func, train_loop_config={"sigterm": sigterm, "saved": saved, "first": first},
                 scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(name="preemption", storage_path=tempfile.mkdtemp(),
                                      failure_config=FailureConfig(preemption_grace_s=60))).fit()
    t = {k: float(open(p).read()) for k, p in (("sigterm", sigterm), ("saved", saved), ("first", first))}
    print("PREEMPTION " + json.dumps({"saved_s": t["saved"] - t["sigterm"], "first_step_s": t["first"] - t["sigterm"]}))
