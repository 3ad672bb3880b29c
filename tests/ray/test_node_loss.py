"""A node leaves the cluster mid-run: with spare capacity the run resumes from its latest checkpoint;
without, fit() fails at once with what was lost and what remains. Its own cluster (nodes come and go)."""

import os
import re
import tempfile
import time

import pytest

ray = pytest.importorskip("ray")
from ray.util import placement_group_table  # noqa: E402

import rafter.train as train  # noqa: E402
from rafter.train import Callback, Checkpoint, FailureConfig, RunConfig, ScalingConfig  # noqa: E402
from rafter.train.torch import TorchTrainer  # noqa: E402
from tests.ray.cluster_fixtures import add_node, rafter_leftovers, start_cluster, stop_cluster  # noqa: E402

pytestmark = pytest.mark.slow
STEPS = 6


@pytest.fixture(scope="module")
def cluster():
    os.environ.pop("RAY_ADDRESS", None)
    c = start_cluster(nodes=3, cpus=2)  # 6 CPUs: a 4-CPU run fits on two nodes, with a third to spare
    try:
        yield c
    finally:
        stop_cluster(c)


def steps(config):
    import torch
    import torch.distributed as dist

    ctx = train.get_context()
    start = 0
    ckpt = train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = int(open(os.path.join(d, "step.txt")).read()) + 1
    for step in range(start, STEPS):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "step.txt"), "w") as f:
                f.write(str(step))
            train.report({"step": step, "attempt": ctx.get_attempt()}, checkpoint=Checkpoint.from_directory(d))
        if ctx.get_attempt() == 1 and step == 1:
            # A step that is still running when the node goes: a receive that no one answers. Ranks whose
            # peer was on the lost node fail; rafter stops the others.
            rank, world = ctx.get_world_rank(), ctx.get_world_size()
            dist.recv(torch.zeros(1), src=(rank + 1) % world)
    return start


class RemoveAWorkerNode(Callback):
    """After attempt 1's second checkpoint, remove a node (not the head) that hosts ranks of the run."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.removed = None

    def on_checkpoint(self, *, checkpoint, metrics, run_path):
        if self.removed is not None or metrics.get("step") != 1:
            return
        groups = [g for g in placement_group_table().values() if g["state"] == "CREATED"]
        hosting = set(groups[0]["bundles_to_node_id"].values())
        node = next(n for n in self.cluster.worker_nodes if n.node_id in hosting)
        self.removed = node.node_id
        self.cluster.remove_node(node, allow_graceful=False)  # as if it crashed


def run(cluster, tmp_path, name):
    remover = RemoveAWorkerNode(cluster)
    trainer = TorchTrainer(steps, scaling_config=ScalingConfig(num_workers=4), run_config=RunConfig(
        name=name, storage_path=str(tmp_path / "results"), cluster="ray", callbacks=[remover],
        failure_config=FailureConfig(max_failures=1)))
    return trainer, remover


def test_with_spare_capacity_the_run_resumes_on_the_remaining_nodes(cluster, tmp_path):
    trainer, remover = run(cluster, tmp_path, "spare")
    result = trainer.fit()
    assert remover.removed is not None
    assert result.metrics == {"step": STEPS - 1, "attempt": 2}
    assert result.return_value == 2  # resumed after the checkpoint of step 1
    first = result.attempts[0]["error"]
    assert re.search(rf"was lost: node \S+ \(Ray node {remover.removed[:8]}\) died; ranks \d, \d lost", first), first
    assert rafter_leftovers() == ([], [])


def test_without_spare_capacity_the_restart_fails_at_once_naming_the_loss(cluster, tmp_path):
    alive = [n for n in ray.nodes() if n["Alive"]]
    assert len(alive) == 2  # the previous test left 4 CPUs: exactly the run's size, nothing to spare
    trainer, remover = run(cluster, tmp_path, "nospare")
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        trainer.fit()
    message = str(info.value)
    assert "The run cannot restart: the Ray cluster lost node " in message
    assert re.search(rf"\(Ray node {remover.removed[:8]}\) with ranks \d, \d", message), message
    assert "asks for 4 CPUs (4 workers x 1 CPU) but the Ray cluster has 2 CPUs in all (node 1: 2)" in message
    assert time.monotonic() - start < 60
    assert rafter_leftovers() == ([], [])
    add_node(cluster)  # leave the cluster as it was
