"""Baseline: what Ray Train 2.60 shows the user when one worker dies or raises.

    BENCH_DEATH_FILE=/tmp/fault.txt python bench/baselines/raytrain_diagnose.py sigkill
    BENCH_DEATH_FILE=/tmp/fault.txt python bench/baselines/raytrain_diagnose.py exception   # or uneven, straggler

2 workers x 1 CPU, no retries (FailureConfig default max_failures=0). Every step
all-reduces a tensor; at step 3 world rank 1 writes time.time() to BENCH_DEATH_FILE
and then either SIGKILLs its own process or raises RuntimeError("boom at step 3"),
while rank 0 keeps going into the next all_reduce (so it blocks / errors there).
trainer.fit() is left to raise as it would in a user's script; the caller captures
stdout+stderr and runs bench/baselines/firstline.py on it.
"""
import os
import sys
import time

os.environ.setdefault("RAY_TMPDIR", "/tmp/rafter-bench-ray")  # keep clear of other Ray users' /tmp/ray

import ray
import ray.train
import torch
import torch.distributed as dist
from ray.train import ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

FAULT_STEP = 3


def uneven_or_straggler(config, rank):
    """As in torchrun_diagnose.py: uneven (DDP, rank 1 has 7 batches, rank 0 8) or straggler (rank 1 sleeps
    25 s at step 3, past TorchConfig(timeout_s=5))."""
    model = ray.train.torch.prepare_model(torch.nn.Linear(8, 2))
    mode = config["mode"]
    for step in range(7 if (mode == "uneven" and rank == 1) else 8):
        if mode == "straggler" and rank == 1 and step == FAULT_STEP:
            with open(config["death_file"], "w") as f:
                f.write(repr(time.time()))
            time.sleep(25)
        model(torch.ones(4, 8)).sum().backward()
        time.sleep(0.05)
    if mode == "uneven" and rank == 1:
        with open(config["death_file"], "w") as f:
            f.write(repr(time.time()))


def train_func(config):
    rank = ray.train.get_context().get_world_rank()
    if config["mode"] in ("uneven", "straggler"):
        return uneven_or_straggler(config, rank)
    for step in range(10):
        if rank == 1 and step == FAULT_STEP:
            with open(config["death_file"], "w") as f:
                f.write(repr(time.time()))
            if config["mode"] == "sigkill":
                os.kill(os.getpid(), 9)
            raise RuntimeError("boom at step 3")
        t = torch.ones(1)
        dist.all_reduce(t)  # Ray Train has already set up the gloo process group
        time.sleep(0.05)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "sigkill"
    assert mode in ("sigkill", "exception", "uneven", "straggler"), mode
    death_file = os.environ.get("BENCH_DEATH_FILE", "/tmp/raytrain_diagnose_fault.txt")
    ray.init(address="local")
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"mode": mode, "death_file": death_file},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(timeout_s=5),
    )
    t0 = time.perf_counter()
    try:
        trainer.fit()  # expected to raise ray.train.TrainingFailedError
    finally:
        print(f"FIT_WALL_S={time.perf_counter() - t0:.3f}", flush=True)
