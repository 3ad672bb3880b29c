"""Baseline: what torchrun shows the user when one worker dies or raises.

    BENCH_DEATH_FILE=/tmp/fault.txt torchrun --standalone --nproc_per_node=2 \
        bench/baselines/torchrun_diagnose.py sigkill      # or: exception, uneven, straggler

2 ranks, gloo; every step all-reduces a tensor; at step 3 rank 1 writes time.time()
to BENCH_DEATH_FILE and then either SIGKILLs itself or raises
RuntimeError("boom at step 3"); rank 0 keeps going into the next all_reduce.
A plain script, like most users write: no @record decorator from
torch.distributed.elastic.multiprocessing.errors, so torchrun's summary carries no
traceback. The caller captures stdout+stderr and runs firstline.py on it.
"""
import datetime
import os
import sys
import time

import torch
import torch.distributed as dist

FAULT_STEP = 3
STRAGGLER_TIMEOUT_S = 5  # the collective timeout in every mode; the straggler sleeps 25 s past it


def uneven_or_straggler(mode, rank, death_file):
    """uneven: DDP, rank 1's data has 7 batches and rank 0's 8; rank 1 leaves the loop and returns.
    straggler: at step 3 rank 1 sleeps 25 s before the all_reduce, past the 5 s collective timeout."""
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 2))
    for step in range(7 if (mode == "uneven" and rank == 1) else 8):
        if mode == "straggler" and rank == 1 and step == FAULT_STEP:
            with open(death_file, "w") as f:
                f.write(repr(time.time()))
            time.sleep(25)
        model(torch.ones(4, 8)).sum().backward()
        time.sleep(0.05)
    if mode == "uneven" and rank == 1:
        with open(death_file, "w") as f:
            f.write(repr(time.time()))
    dist.destroy_process_group()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "sigkill"
    assert mode in ("sigkill", "exception", "uneven", "straggler"), mode
    death_file = os.environ.get("BENCH_DEATH_FILE", "/tmp/torchrun_diagnose_fault.txt")
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=STRAGGLER_TIMEOUT_S))
    rank = dist.get_rank()
    if mode in ("uneven", "straggler"):
        uneven_or_straggler(mode, rank, death_file)
        return
    for step in range(10):
        if rank == 1 and step == FAULT_STEP:
            with open(death_file, "w") as f:
                f.write(repr(time.time()))
            if mode == "sigkill":
                os.kill(os.getpid(), 9)
            raise RuntimeError("boom at step 3")
        t = torch.ones(1)
        dist.all_reduce(t)
        time.sleep(0.05)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
