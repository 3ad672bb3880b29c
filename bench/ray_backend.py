"""rafter's Ray backend vs Ray Train 2.60: the quickstart on the same simulated 2-node Ray cluster.

    .venv/bin/python bench/ray_backend.py [--repeat 3]

Each run is a fresh process that starts a ``ray.cluster_utils.Cluster`` (2 nodes x 2 CPUs, on this
machine), times ``trainer.fit()`` alone, and stops the cluster. Both scripts are the quickstart with 4
workers x 1 CPU (the largest request a 4-CPU cluster holds) and neither calls ``ray.init()``: RAY_ADDRESS
points at the cluster and fit() connects, so connecting is inside both timings. rafter runs in this
venv; Ray Train in the venv that bench/_common.py finds (RAYTRAIN_VENV, /work/venvs/raytrain or the setup
script's default ~/.cache/rafter-bench/raytrain-venv; see
bench/baselines/setup_raytrain_venv.sh). Prints each fit() wall time, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASELINE = os.path.join(HERE, "baselines", "raytrain_cluster_quickstart.py")


def rafter_child() -> None:
    """One rafter run (in this process): cluster up, time fit(), cluster down."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address  # RunConfig(cluster="auto") picks the Ray backend
    try:
        import torch
        import torch.nn as nn
        import torch.optim as optim

        from rafter import train
        from rafter.train import RunConfig, ScalingConfig
        from rafter.train.torch import TorchTrainer

        def train_func(config):
            model = nn.Linear(1, 1)
            model = train.torch.prepare_model(model)
            optimizer = optim.SGD(model.parameters(), lr=1e-3)
            for i in range(10):
                loss = torch.randn(1, requires_grad=True).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                train.report({"loss": loss.item()})

        trainer = TorchTrainer(
            train_loop_per_worker=train_func,
            scaling_config=ScalingConfig(num_workers=4, use_gpu=False, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="rafter-bench-")),
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        fit_s = time.perf_counter() - t0
        print(f"Training finished. Last loss: {result.metrics['loss']}")
        print(f"FIT_WALL_S={fit_s:.3f}", flush=True)
    finally:
        cluster.shutdown()


def run(cmd, timeout: float = 900) -> float:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    found = re.findall(r"FIT_WALL_S=([0-9.]+)", out)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-4000:]}")
    return float(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", choices=["rafter"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rafter_child()
        return
    sys.path.insert(0, HERE)
    from _common import raytrain_python as find_raytrain

    raytrain_python = find_raytrain()  # $RAYTRAIN_VENV, /work/venvs/raytrain or the setup script's default
    if raytrain_python is None:
        sys.exit("No Ray Train venv: create it with bench/baselines/setup_raytrain_venv.sh or set RAYTRAIN_VENV.")
    times = {"rafter": [], "raytrain": []}
    for i in range(args.repeat):
        times["rafter"].append(run([sys.executable, os.path.abspath(__file__), "--child", "rafter"]))
        times["raytrain"].append(run([raytrain_python, BASELINE]))
        print(f"run {i + 1}: rafter fit() {times['rafter'][-1]:.2f} s, Ray Train fit() {times['raytrain'][-1]:.2f} s",
              flush=True)
    rafter, raytrain = statistics.median(times["rafter"]), statistics.median(times["raytrain"])
    print(f"quickstart, 4 workers x 1 CPU on a simulated 2-node x 2-CPU Ray cluster ({os.cpu_count()} CPUs here), "
          f"median of {args.repeat}:")
    print(f"  rafter (Ray backend) fit(): {rafter:.2f} s")
    print(f"  Ray Train 2.60 fit():       {raytrain:.2f} s")
    print(f"  ratio: rafter is {raytrain / rafter:.1f}x faster")


if __name__ == "__main__":
    main()
