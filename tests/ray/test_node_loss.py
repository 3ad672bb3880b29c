"""A node leaves the cluster mid-run: with spare capacity the run resumes from its latest checkpoint;
without, fit() fails at once as a ControllerError naming what was lost and what remains, the run folder
says failed and on_end ran. Each test sets the node count it needs on the module's cluster, so their
order does not matter."""

import importlib.util
import json
import os
import re
import tempfile
import time

import pytest

import rafter.train as train
from rafter.train import Callback, Checkpoint, ControllerError, FailureConfig, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer
from tests.ray.cluster_fixtures import rafter_leftovers, with_nodes

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")]
STEPS = 6


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    nodes = len(ray_cluster.worker_nodes) + 1
    yield ray_cluster
    with_nodes(ray_cluster, nodes)


class Ended(Callback):
    def __init__(self):
        self.results = []

    def on_end(self, *, result, run_path):
        self.results.append(result)


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
        from ray.util import placement_group_table

        groups = [g for g in placement_group_table().values() if g["state"] == "CREATED"]
        hosting = set(groups[0]["bundles_to_node_id"].values())
        node = next(n for n in self.cluster.worker_nodes if n.node_id in hosting)
        self.removed = node.node_id
        self.cluster.remove_node(node, allow_graceful=False)  # as if it crashed


def run(cluster, tmp_path, name, *callbacks):
    remover = RemoveAWorkerNode(cluster)
    trainer = TorchTrainer(steps, scaling_config=ScalingConfig(num_workers=4), run_config=RunConfig(
        name=name, storage_path=str(tmp_path / "results"), cluster="ray", callbacks=[remover, *callbacks],
        failure_config=FailureConfig(max_failures=1)))
    return trainer, remover


def test_with_spare_capacity_the_run_resumes_on_the_remaining_nodes(cluster, tmp_path):
    with_nodes(cluster, 3)  # 6 CPUs: the 4-CPU run fits on two nodes, with a third to spare
    trainer, remover = run(cluster, tmp_path, "spare")
    result = trainer.fit()
    assert remover.removed is not None
    assert result.metrics == {"step": STEPS - 1, "attempt": 2}
    assert result.return_value == 2  # resumed after the checkpoint of step 1
    first = result.attempts[0]["error"]
    assert re.search(rf"was lost: node \S+ \(Ray node {remover.removed[:8]}\) died; ranks \d, \d lost", first), first
    assert rafter_leftovers() == ([], [])


def test_without_spare_capacity_the_restart_fails_at_once_naming_the_loss(cluster, tmp_path, monkeypatch):
    with_nodes(cluster, 2)  # 4 CPUs: exactly the run's size, nothing to spare once a node goes
    monkeypatch.setenv("RAFTER_RAY_STARTUP_TIMEOUT_S", "600")  # "at once": far sooner than any placement wait
    ended = Ended()
    trainer, remover = run(cluster, tmp_path, "nospare", ended)
    start = time.monotonic()
    with pytest.raises(ControllerError) as info:
        trainer.fit()
    assert time.monotonic() - start < 600
    err = info.value
    message = str(err)
    assert message.startswith("Attempt 2 could not start: The run cannot restart: the Ray cluster lost node "), message
    assert re.search(rf"\(Ray node {remover.removed[:8]}\) with ranks \d, \d", message), message
    assert "asks for 4 CPUs (4 workers x 1 CPU) but the Ray cluster has 2 CPUs in all (node 1: 2)" in message
    assert err.kind == "placement"
    assert len(err.attempt_errors) == 1 and "was lost: node" in err.attempt_errors[0], err.attempt_errors
    assert isinstance(err.__cause__, ValueError)
    with open(tmp_path / "results" / "nospare" / "rafter_run.json") as f:
        saved = json.load(f)
    assert saved["status"] == "failed" and saved["error"] == err.first_line
    assert [a["error"] is not None for a in saved["attempts"]] == [True, True]
    assert len(ended.results) == 1 and ended.results[0].error is err  # on_end ran, with the error
    assert rafter_leftovers() == ([], [])
