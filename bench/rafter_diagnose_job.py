"""The fault job of bench/diagnose.py under rafter (same as baselines/torchrun_diagnose.py):
2 ranks, gloo, an all_reduce every step; at step 3 rank 1 records the time and either SIGKILLs
itself or raises RuntimeError("boom at step 3"); or (uneven, straggler) see uneven_or_straggler. Prints
FIRST_LINE= and DETECT_S= (fault -> fit() raising).
"""

import os
import signal
import sys
import tempfile
import time

import torch
import torch.distributed as dist

from rafter import train
from rafter.train import RunConfig, ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchConfig, TorchTrainer

FAULT_STEP = 3


def uneven_or_straggler(config, rank):
    """As in baselines/torchrun_diagnose.py: uneven (DDP, rank 1 has 7 batches, rank 0 8) or straggler
    (rank 1 sleeps 25 s at step 3, past TorchConfig(timeout_s=5))."""
    model = train.torch.prepare_model(torch.nn.Linear(8, 2))
    mode = config["mode"]
    for step in range(7 if (mode == "uneven" and rank == 1) else 8):
        if mode == "straggler" and rank == 1 and step == FAULT_STEP:
            with open(config["death"], "w") as f:
                f.write(repr(time.time()))
            time.sleep(25)
        model(torch.ones(4, 8)).sum().backward()
        time.sleep(0.05)
    if mode == "uneven" and rank == 1:
        with open(config["death"], "w") as f:
            f.write(repr(time.time()))


def train_func(config):
    rank = train.get_context().get_world_rank()
    if config["mode"] in ("uneven", "straggler"):
        return uneven_or_straggler(config, rank)
    t = torch.ones(1)
    for step in range(10):
        if rank == 1 and step == FAULT_STEP:
            with open(config["death"], "w") as f:
                f.write(repr(time.time()))
            if config["mode"] == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("boom at step 3")
        dist.all_reduce(t)
        train.report({"step": step})


if __name__ == "__main__":
    mode, death = sys.argv[1], os.environ["BENCH_DEATH_FILE"]
    try:
        TorchTrainer(train_func, train_loop_config={"mode": mode, "death": death},
                     torch_config=TorchConfig(timeout_s=5),
                     scaling_config=ScalingConfig(num_workers=2),
                     run_config=RunConfig(name="diagnose", storage_path=tempfile.mkdtemp())).fit()
    except TrainingFailedError as err:
        raised = time.time()
        print(f"FIRST_LINE={err.first_line}")
        print(f"DETECT_S={raised - float(open(death).read()):.3f}")
        sys.exit(1)
