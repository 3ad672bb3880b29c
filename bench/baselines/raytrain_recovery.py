"""Baseline: recovery time of Ray Train 2.60 after a worker is SIGKILLed.

    BENCH_DEATH_FILE=/tmp/death.txt BENCH_FIRST_STEP_FILE=/tmp/first.txt \
        python bench/baselines/raytrain_recovery.py

Same job as torchrun_recovery.py: 2 workers x 1 CPU, gloo DDP (via
ray.train.torch.prepare_model), a tiny MLP, 20 steps of a few ms, no checkpoints,
FailureConfig(max_failures=1). On the first attempt world rank 1 writes time.time()
to BENCH_DEATH_FILE at step 5 and SIGKILLs its own worker process. On the second
attempt (known from a marker file the first attempt leaves), world rank 0 writes
time.time() to BENCH_FIRST_STEP_FILE once its first step has completed. The driver
prints `FIT_WALL_S=` and `RECOVERY_S=<first_step - death>`.

No ray.train.report() per step: in Ray Train 2.60 every report after the first
blocks until the controller polls the worker (every 2 s by default), which would
only stretch the run; one report at the end keeps the job honest.
"""
import os
import signal
import time

os.environ.setdefault("RAY_TMPDIR", "/tmp/rafter-bench-ray")  # keep clear of other Ray users' /tmp/ray

import ray
import ray.train
import torch, torch.nn as nn, torch.optim as optim
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

STEPS, DIE_AT = 20, 5


def write_ts(path):
    with open(path, "w") as f:
        f.write(repr(time.time()))
        f.flush()
        os.fsync(f.fileno())


def train_func(config):
    rank = ray.train.get_context().get_world_rank()
    marker = config["marker_file"]
    # First attempt iff no marker yet. Rank 0 and rank 1 both read it before any
    # step runs, and only rank 1 creates it (just before dying), so no race.
    second_attempt = os.path.exists(marker)
    torch.manual_seed(rank)
    model = ray.train.torch.prepare_model(
        nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)))
    opt = optim.SGD(model.parameters(), lr=1e-2)
    for step in range(STEPS):
        if not second_attempt and rank == 1 and step == DIE_AT:
            open(marker, "w").close()
            write_ts(config["death_file"])
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = torch.randn(64, 32), torch.randn(64, 1)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()  # backward all-reduces grads
        if second_attempt and rank == 0 and step == 0:
            write_ts(config["first_step_file"])
    ray.train.report({"loss": loss.item(), "second_attempt": second_attempt})


if __name__ == "__main__":
    death_file = os.environ.get("BENCH_DEATH_FILE", "/tmp/raytrain_recovery_death.txt")
    first_step_file = os.environ.get("BENCH_FIRST_STEP_FILE", "/tmp/raytrain_recovery_first.txt")
    marker_file = death_file + ".marker"
    for p in (death_file, first_step_file, marker_file):  # stale files would skew the result
        if os.path.exists(p):
            os.remove(p)
    ray.init(address="local")  # fresh local instance (2 CPUs detected); never attach to a stale one
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"death_file": death_file, "first_step_file": first_step_file,
                           "marker_file": marker_file},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(failure_config=FailureConfig(max_failures=1)),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    print(f"FIT_WALL_S={time.perf_counter() - t0:.3f}", flush=True)
    print("metrics:", getattr(result, "metrics", None), "error:", getattr(result, "error", None))
    death = float(open(death_file).read())
    first = float(open(first_step_file).read())
    print(f"RECOVERY_S={first - death:.3f}", flush=True)
    ray.shutdown()
