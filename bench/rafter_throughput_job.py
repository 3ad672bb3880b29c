"""The rafter side of bench/throughput.py, run as its own script like a user's (``python train.py``):

    python bench/rafter_throughput_job.py --workload llama --steps 400

TorchTrainer with 2 workers, ``prepare_model`` (DDP over gloo) and ``train.report({"step", "loss"})``
after every step; the same steps as bench/baselines/torchrun_throughput.py (bench/throughput_workloads.py).
Prints one line ``RESULT <json>`` as the baseline does.
"""

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from throughput_workloads import parse_args  # noqa: E402

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
    workload, steps, warmup = parse_args()
    with tempfile.TemporaryDirectory(prefix="rafter-throughput-") as storage:
        result = TorchTrainer(
            train_func,
            train_loop_config={"workload": workload, "steps": steps, "warmup": warmup},
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(name=f"throughput_{workload}", storage_path=storage),
        ).fit()
    print("RESULT " + json.dumps(result.return_value), flush=True)


if __name__ == "__main__":
    main()
