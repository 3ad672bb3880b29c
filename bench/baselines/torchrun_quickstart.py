"""Baseline: the quickstart loop as plain torch.distributed, no framework.

    torchrun --standalone --nproc_per_node=4 bench/baselines/torchrun_quickstart.py

4 processes, gloo backend, nn.Linear(1, 1) wrapped in DDP, 10 SGD steps on the same
fake loss as the Ray Train / rafter quickstart. Rank 0 prints `FIT_WALL_S=<s>`: the
time from the start of init_process_group to the end of the loop (the closest
equivalent to trainer.fit(); process start-up by torchrun is in the caller's
whole-script time).
"""
import time

_t0 = time.perf_counter()

import torch, torch.nn as nn, torch.optim as optim
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def main():
    t0 = time.perf_counter()
    dist.init_process_group("gloo")  # rank/world size/master addr come from torchrun's env
    rank = dist.get_rank()
    model = DDP(nn.Linear(1, 1))
    optimizer = optim.SGD(model.parameters(), lr=1e-3)
    for i in range(10):
        # Same fake loss as the quickstart: it does not touch the model, so DDP's
        # all-reduce never fires; the loop only exercises step/zero_grad overhead.
        loss = torch.randn(1, requires_grad=True).sum()
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        if rank == 0:
            print({"loss": loss.item()}, flush=True)
    dist.barrier()
    if rank == 0:
        print(f"FIT_WALL_S={time.perf_counter() - t0:.3f}", flush=True)
        print(f"PROC_WALL_S={time.perf_counter() - _t0:.3f}  # incl. torch import", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
