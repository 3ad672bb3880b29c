"""Baseline for bench/ray_backend.py: the quickstart with Ray Train 2.60 on a simulated 2-node Ray cluster.

Run with the Ray Train venv (bench/baselines/setup_raytrain_venv.sh); prints ``FIT_WALL_S=<seconds>``,
the wall time of ``trainer.fit()`` alone. The cluster (``ray.cluster_utils.Cluster``: 2 nodes x 2 CPUs
on this machine) is started before the timer and stopped after it. As in rafter's run, the script
does not call ``ray.init()``: RAY_ADDRESS points at the cluster, and fit() connects.

4 workers x 1 CPU: the brief's quickstart asks for {"CPU": 2} per worker (8 CPUs), which a 4-CPU
cluster can never hold; 1 CPU each is the largest request that fits, on both backends.
"""
import os
import tempfile
import time

from ray.cluster_utils import Cluster


def train_func(config):
    import torch
    import torch.nn as nn
    import torch.optim as optim
    from ray import train

    model = nn.Linear(1, 1)
    model = train.torch.prepare_model(model)
    optimizer = optim.SGD(model.parameters(), lr=1e-3)
    for i in range(10):
        loss = torch.randn(1, requires_grad=True).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train.report({"loss": loss.item()})


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        trainer = TorchTrainer(
            train_func,
            scaling_config=ScalingConfig(num_workers=4, use_gpu=False, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="raytrain-bench-")),
        )
        t0 = time.perf_counter()
        result = trainer.fit()
        fit_s = time.perf_counter() - t0
        print("error:", getattr(result, "error", None))
        print(f"FIT_WALL_S={fit_s:.3f}", flush=True)
        ray.shutdown()
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
