"""Elastic training on a real Ray cluster: ScalingConfig(num_workers=(2, 4)) starts at 2 on a cluster
that holds 2, grows to 4 when a node joins, shrinks to 2 when a node is lost, and finishes, each time
from the latest checkpoint with the new world size."""

import importlib.util
import os
import tempfile
import time

import pytest

import rafter.train as train
from rafter.train import Callback, Checkpoint, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer
from tests.ray.cluster_fixtures import add_node, rafter_leftovers, with_nodes

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")]


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    nodes = len(ray_cluster.worker_nodes) + 1
    yield ray_cluster
    with_nodes(ray_cluster, nodes)


def steps(config):
    """One checkpointed step after another; attempt 3 (after the grow and the shrink) finishes."""
    import torch
    import torch.distributed as dist

    ctx = train.get_context()
    start = 0
    ckpt = train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = int(open(os.path.join(d, "step.txt")).read()) + 1
    step = start
    while step < start + 3 or ctx.get_attempt() < 3:
        t = torch.ones(1)
        dist.all_reduce(t)
        time.sleep(0.02)  # the step's work
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "step.txt"), "w") as f:
                f.write(str(step))
            train.report({"step": step, "world": int(t.item()), "start": start},
                         checkpoint=Checkpoint.from_directory(d))
        step += 1
    return start


class ChangeTheCluster(Callback):
    """At 2 workers, add a node; at 4, remove a worker node that hosts ranks (as if it crashed)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.added = self.removed = False

    def on_checkpoint(self, *, checkpoint, metrics, run_path):
        if metrics["world"] == 2 and not self.added:
            self.added = True
            add_node(self.cluster)
        elif metrics["world"] == 4 and not self.removed:
            self.removed = True
            self.cluster.remove_node(next(iter(self.cluster.worker_nodes)), allow_graceful=False)


def test_elastic_grows_with_a_new_node_and_shrinks_with_a_lost_one(cluster, tmp_path):
    with_nodes(cluster, 1)  # 2 CPUs: room for 2 workers
    changer = ChangeTheCluster(cluster)
    result = TorchTrainer(steps, scaling_config=ScalingConfig(num_workers=(2, 4), elastic_resize_monitor_interval_s=0.5),
                          run_config=RunConfig(name="elastic", storage_path=str(tmp_path / "results"), cluster="ray",
                                               callbacks=[changer])).fit()
    assert changer.added and changer.removed
    worlds = []
    for m in result.metrics_history:
        if not worlds or worlds[-1] != m["world"]:
            worlds.append(m["world"])
    assert worlds == [2, 4, 2], worlds
    assert result.metrics["world"] == 2 and len(result.attempts) == 3
    first, second = result.attempts[0]["error"], result.attempts[1]["error"]
    assert first.startswith("Resized from 2 to 4 workers"), first
    assert "lost" in second, second
    # No step lost beyond the last checkpoint: each attempt starts right after the previous one's last step.
    history = result.metrics_history
    for before, after in zip(history, history[1:]):
        assert after["step"] in (before["step"] + 1, before["step"]), (before, after)
    assert rafter_leftovers() == ([], [])
