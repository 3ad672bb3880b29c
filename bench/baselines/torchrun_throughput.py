"""Baseline for bench/throughput.py: the same training steps as a plain DDP script, no framework.

    torchrun --standalone --nproc_per_node=2 bench/baselines/torchrun_throughput.py --workload mlp --steps 1500

gloo, the model wrapped in DistributedDataParallel, the steps of bench/throughput_workloads.py. Rank 0 prints
one line ``RESULT <json>``: steps/s from the slowest rank's timer over the steady-state steps, and the max
USS/RSS over ranks taken right after the loop. ``BENCH_FR_SIDE=<side>`` turns torch's flight recorder on in
that side (with ``bench/throughput.py --control``: what collective tracking costs plain torchrun).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/

import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from throughput_workloads import build, parse_args, summarize, timed_steps  # noqa: E402


def main() -> None:
    workload, steps, warmup = parse_args()
    if os.environ.get("BENCH_FR_SIDE") == os.environ.get("BENCH_SIDE", "torchrun"):
        os.environ["TORCH_FR_BUFFER_SIZE"] = "256"  # an A/A control with torch's flight recorder on one side
    dist.init_process_group("gloo")  # rank, world size and master address come from torchrun's env
    model, loss_fn, batches = build(workload)
    model = DistributedDataParallel(model)
    elapsed = timed_steps(model, loss_fn, batches, steps, warmup, side=os.environ.get("BENCH_SIDE", "torchrun"))
    summary = summarize(elapsed, steps)
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps(summary), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
