"""The rafter side of bench/throughput.py, run as its own script like a user's (``python train.py``):

    python bench/rafter_throughput_job.py --workload llama --steps 400

TorchTrainer with 2 workers, ``prepare_model`` (DDP over gloo) and ``train.report({"step", "loss"})``
after every step; the same steps as bench/baselines/torchrun_throughput.py (bench/throughput_workloads.py).
Prints one line ``RESULT <json>`` as the baseline does.
"""

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from throughput_workloads import WORKLOADS  # noqa: E402

from rafter.train import RunConfig, ScalingConfig  # noqa: E402
from rafter.train.torch import TorchTrainer  # noqa: E402


def train_func(config):
    from throughput_workloads import build, summarize, timed_steps

    from rafter import train

    model, loss_fn, batches = build(config["workload"])
    model = train.torch.prepare_model(model)
    report = None if os.environ.get("BENCH_NO_REPORT") else train.report  # to measure what reporting costs
    elapsed = timed_steps(model, loss_fn, batches, config["steps"], config["warmup"], report=report, side="rafter")
    return summarize(elapsed, config["steps"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="mlp")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    args = parser.parse_args()
    steps = args.steps or WORKLOADS[args.workload]["steps"]
    warmup = args.warmup if args.warmup is not None else WORKLOADS[args.workload]["warmup"]
    with tempfile.TemporaryDirectory(prefix="rafter-throughput-") as storage:
        result = TorchTrainer(
            train_func,
            train_loop_config={"workload": args.workload, "steps": steps, "warmup": warmup},
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(name=f"throughput_{args.workload}", storage_path=storage),
        ).fit()
    print("RESULT " + json.dumps(result.return_value), flush=True)


if __name__ == "__main__":
    main()
