"""Diagnosis of a rank on a node that is not the driver's, on a real ray.cluster_utils.Cluster: its memory
is watched by its own actor (the driver can't see processes elsewhere) and the verdict names the node; its
collective progress reaches the driver over its channel."""

import os
import re

import pytest

ray = pytest.importorskip("ray")

import rafter.train as train  # noqa: E402
from rafter.train import RunConfig, ScalingConfig, TrainingFailedError  # noqa: E402
from rafter.train.torch import TorchTrainer  # noqa: E402
from tests.integration.cgroups import own_memory_cgroup, small_cgroup  # noqa: E402
from tests.ray.cluster_fixtures import start_cluster, stop_cluster  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    os.environ.pop("RAY_ADDRESS", None)
    c = start_cluster(nodes=2, cpus=2)
    try:
        yield c
    finally:
        stop_cluster(c)


def hoards_on_the_other_node(config):
    """Each rank takes a whole 2-CPU node; the one whose raylet is not the head's allocates until stopped."""
    import torch
    import torch.distributed as dist

    t = torch.ones(1)
    dist.all_reduce(t)
    train.report({"step": 0})
    if os.environ.get("RAY_RAYLET_PID") != str(config["head_raylet"]):
        if config.get("cgroup"):
            with open(os.path.join(config["cgroup"], "tasks"), "w") as f:
                f.write(str(os.getpid()))
        hoard = [torch.ones(25 * 2**20) for _ in range(40)]  # up to 4 GiB, 100 MiB at a time
        raise AssertionError(f"nothing stopped a worker holding {len(hoard) / 10:.1f} GiB")
    dist.all_reduce(t)  # waits for the other rank


def _fit(cluster, tmp_path, limit=None, cgroup=None):
    resources = {"CPU": 2, **({"memory": limit} if limit else {})}
    config = {"head_raylet": cluster.head_node.all_processes["raylet"][0].process.pid, "cgroup": cgroup}
    trainer = TorchTrainer(hoards_on_the_other_node, train_loop_config=config,
                           scaling_config=ScalingConfig(num_workers=2, resources_per_worker=resources),
                           run_config=RunConfig(name="mem", storage_path=str(tmp_path), cluster="ray"))
    with pytest.raises(TrainingFailedError) as info:
        trainer.fit()
    return info.value


def test_a_worker_over_its_limit_on_another_node_is_out_of_memory_there(cluster, tmp_path):
    err = _fit(cluster, tmp_path, limit=1_500 * 2**20)
    first = err.first_line
    assert "ran out of memory on node " in first and "over its limit of 1.46 GiB" in first, first
    assert err.kind == "oom" and err.evidence["oom"]["source"] == "rafter" and err.evidence["oom"]["node"]


@pytest.mark.skipif(own_memory_cgroup() is None, reason="needs a writable cgroup-v1 memory controller")
def test_a_kernel_oom_kill_on_another_node_is_named_with_the_node(cluster, tmp_path):
    with small_cgroup("rafter-ray-oom") as cg:
        err = _fit(cluster, tmp_path, cgroup=cg)
    first = err.first_line
    assert "was killed by the kernel OOM killer on node " in first, first
    assert err.kind == "oom" and err.evidence["oom"]["source"] == "kernel"


def returns_early_on_the_other_node(config):
    import torch
    import torch.distributed as dist

    far = os.environ.get("RAY_RAYLET_PID") != str(config["head_raylet"])
    t = torch.ones(2)
    for step in range(6):
        dist.all_reduce(t)
        train.report({"step": step})
        if far and step == 2:
            return


def test_a_rank_on_the_other_node_that_returned_early_is_named(cluster, tmp_path):
    config = {"head_raylet": cluster.head_node.all_processes["raylet"][0].process.pid}
    trainer = TorchTrainer(returns_early_on_the_other_node, train_loop_config=config,
                           scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 2}),
                           run_config=RunConfig(name="early", storage_path=str(tmp_path), cluster="ray"))
    with pytest.raises(TrainingFailedError) as info:
        trainer.fit()
    err = info.value
    first = err.first_line
    assert re.match(r"Rank [01] \(pid \d+, host \S+\) returned at report 3 while rank [01] was still in all_reduce #",
                    first), first
    assert err.kind == "out_of_step" and "Connection" not in first
