"""Baseline: recovery time of plain torchrun after a worker is SIGKILLed.

    BENCH_DEATH_FILE=/tmp/death.txt BENCH_FIRST_STEP_FILE=/tmp/first.txt \
        torchrun --standalone --nproc_per_node=2 --max-restarts=1 \
        bench/baselines/torchrun_recovery.py

2 ranks, gloo DDP, a tiny MLP, 20 steps of a few ms each (no checkpointing: the
restarted attempt starts again from step 0, like a job without resume logic).
Attempt 0 (TORCHELASTIC_RESTART_COUNT == 0): rank 1 writes time.time() to
BENCH_DEATH_FILE at step 5 and SIGKILLs itself; torchrun tears the group down and
restarts both ranks. Attempt 1: rank 0 writes time.time() to BENCH_FIRST_STEP_FILE
as soon as its first training step has completed, and prints
`RECOVERY_S=<first_step - death>` at the end.
The caller should delete both files before running.
"""
import os
import signal
import time

import torch, torch.nn as nn, torch.optim as optim
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

STEPS, DIE_AT = 20, 5


def write_ts(path):
    with open(path, "w") as f:
        f.write(repr(time.time()))
        f.flush()
        os.fsync(f.fileno())


def main():
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    death_file = os.environ["BENCH_DEATH_FILE"]
    first_step_file = os.environ["BENCH_FIRST_STEP_FILE"]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)
    model = DDP(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)))
    opt = optim.SGD(model.parameters(), lr=1e-2)
    for step in range(STEPS):
        if attempt == 0 and rank == 1 and step == DIE_AT:
            write_ts(death_file)
            os.kill(os.getpid(), signal.SIGKILL)
        x, y = torch.randn(64, 32), torch.randn(64, 1)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()  # backward all-reduces grads
        if attempt > 0 and rank == 0 and step == 0:
            write_ts(first_step_file)
    if rank == 0:
        print(f"attempt={attempt} finished {STEPS} steps, loss={loss.item():.4f}", flush=True)
        if attempt > 0 and os.path.exists(death_file):
            death = float(open(death_file).read())
            first = float(open(first_step_file).read())
            print(f"RECOVERY_S={first - death:.3f}", flush=True)
    dist.barrier()  # without it rank 1 can abort ("terminate called ...") at exit
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
