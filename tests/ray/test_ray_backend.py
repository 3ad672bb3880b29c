"""The Ray backend on a real 2-node x 2-CPU Ray cluster (ray.cluster_utils.Cluster), real gloo."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.distributed as dist

import rafter.train as train
from rafter.train import ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchTrainer
from tests.ray.cluster_fixtures import rafter_leftovers

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")

QUICKSTART = textwrap.dedent(
    """
    # The brief's quickstart, on a 2 x 2-CPU cluster: 4 workers with 1 CPU each (the RAY_ADDRESS env selects Ray).
    from rafter import train
    from rafter.train import ScalingConfig
    from rafter.train.torch import TorchTrainer
    import torch
    import torch.nn as nn
    import torch.optim as optim

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

    scaling_config = ScalingConfig(num_workers=4, use_gpu=False, resources_per_worker={"CPU": 1})
    trainer = TorchTrainer(train_loop_per_worker=train_func, scaling_config=scaling_config)
    result = trainer.fit()
    print(f"Training finished. Last loss: {result.metrics['loss']}")
    """
)


def fit(fn, run_config, n=4, config=None, **scaling):
    return TorchTrainer(fn, train_loop_config=config, scaling_config=ScalingConfig(num_workers=n, **scaling),
                        run_config=run_config).fit()


def on_ray(run_config, **kwargs):
    return run_config(cluster="ray", **kwargs)


@pytest.mark.slow
def test_quickstart_runs_unchanged_on_the_cluster_and_prints_its_line(ray_cluster, tmp_path):
    script = tmp_path / "quickstart.py"
    script.write_text(QUICKSTART)
    env = dict(os.environ, RAY_ADDRESS=ray_cluster.address, HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Training finished. Last loss: " in proc.stdout
    assert not rafter_leftovers()[0]


def where_am_i():
    ctx = train.get_context()
    mine = torch.tensor([ctx.get_world_rank(), ctx.get_node_rank(), ctx.get_local_rank(), ctx.get_local_world_size(),
                         ctx.get_world_size(), os.getppid()], dtype=torch.int64)
    everyone = [torch.zeros_like(mine) for _ in range(ctx.get_world_size())]
    dist.all_gather(everyone, mine)
    train.report({"ranks": [t.tolist() for t in everyone], "master": os.environ["MASTER_ADDR"]})


def test_ranks_are_ordered_by_node_with_contiguous_local_ranks(ray_cluster, run_config):
    result = fit(where_am_i, on_ray(run_config, name="where"), n=4)
    rows = result.metrics["ranks"]
    got = [r[:5] for r in rows]
    assert got == [[0, 0, 0, 2, 4], [1, 0, 1, 2, 4], [2, 1, 0, 2, 4], [3, 1, 1, 2, 4]]
    parents = [r[5] for r in rows]  # each node's workers are forked by that node's fork server
    assert parents[0] == parents[1] and parents[2] == parents[3] and parents[0] != parents[2]
    import ray

    assert result.metrics["master"] == ray.util.get_node_ip_address()  # rank 0's node
    assert rafter_leftovers() == ([], [])


def test_spread_strategy_puts_one_worker_per_node(ray_cluster, run_config):
    result = fit(where_am_i, on_ray(run_config, name="spread"), n=2, placement_strategy="STRICT_SPREAD")
    got = [r[1:4] for r in result.metrics["ranks"]]
    assert got == [[0, 0, 1], [1, 0, 1]]


def test_more_cpus_than_the_cluster_has_fails_at_once_naming_the_shortfall(ray_cluster, run_config, monkeypatch):
    monkeypatch.setenv("RAFTER_RAY_STARTUP_TIMEOUT_S", "120")
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        fit(where_am_i, on_ray(run_config, name="big"), n=3, resources_per_worker={"CPU": 2})
    assert time.monotonic() - start < 120  # without waiting for the cluster to place anything
    message = str(info.value)
    assert "asks for 6 CPUs (3 workers x 2 CPU) but the Ray cluster has 4 CPUs in all (node 1: 2, node 2: 2)" in message
    assert "ScalingConfig(num_workers=2)" in message
    assert rafter_leftovers() == ([], [])


def test_a_worker_bigger_than_any_node_is_rejected(ray_cluster, run_config):
    with pytest.raises(ValueError, match=r"Each worker asks for 3 CPUs, but .* largest node .* has 2 CPUs"):
        fit(where_am_i, on_ray(run_config, name="wide"), n=1, resources_per_worker={"CPU": 3})


def test_with_an_autoscaler_it_waits_visibly_then_fails_with_the_numbers(ray_cluster, run_config, monkeypatch, caplog):
    monkeypatch.setenv("RAFTER_RAY_AUTOSCALER", "1")
    monkeypatch.setenv("RAFTER_RAY_STARTUP_TIMEOUT_S", "2")
    with pytest.raises(train.ControllerError) as info:  # the run had started: its folder says it failed
        fit(where_am_i, on_ray(run_config, name="wait"), n=3, resources_per_worker={"CPU": 2})
    assert info.value.kind == "placement" and isinstance(info.value.__cause__, ValueError)
    assert "Timed out after 2 s waiting for the Ray cluster to place 3 workers x {'CPU': 2}" in str(info.value)
    assert "4 CPUs in all (node 1: 2, node 2: 2)" in str(info.value)
    assert any("Waiting for the Ray cluster" in r.getMessage() for r in caplog.records)
    assert rafter_leftovers() == ([], [])


def test_the_working_directory_is_shipped_as_a_runtime_env(ray_cluster, run_config, tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymodule.py").write_text("VALUE = 'shipped'\n")
    (project / "job.py").write_text(textwrap.dedent("""
        import os

        def train_fn():
            import mymodule  # importable on a worker only from the shipped copy of the driver's folder

            return mymodule.VALUE, os.getcwd()
        """))
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.setenv("RAFTER_RAY_WORKING_DIR", "always")  # as if the nodes were other machines
    import job

    value, cwd = fit(job.train_fn, on_ray(run_config, name="ship"), n=2).return_value
    assert value == "shipped"
    assert cwd != str(project) and "working_dir_files" in cwd  # Ray's copy, not the driver's folder


def fails_or_dies(config):
    rank = train.get_context().get_world_rank()
    if rank == config["rank"]:
        if config["how"] == "raise":
            raise ValueError("bad batch")
        os.kill(os.getpid(), 9)
    t = torch.ones(1)
    dist.all_reduce(t)


def test_nothing_of_the_run_is_left_after_success_and_after_failure(ray_cluster, run_config):
    fit(where_am_i, on_ray(run_config, name="ok"), n=4)
    assert rafter_leftovers() == ([], [])
    with pytest.raises(TrainingFailedError) as info:
        fit(fails_or_dies, on_ray(run_config, name="bad"), n=4, config={"rank": 3, "how": "kill"})
    assert info.value.rank == 3 and "was killed by SIGKILL" in info.value.first_line
    assert rafter_leftovers() == ([], [])


DRIVER = textwrap.dedent(
    """
    import os, sys
    import torch, torch.distributed as dist
    from rafter.train import ScalingConfig, RunConfig
    from rafter.train.torch import TorchTrainer

    def train_func():
        print("READY", os.getpid(), flush=True)
        t = torch.ones(1)
        while True:  # never ends on its own
            dist.all_reduce(t)

    TorchTrainer(train_func, scaling_config=ScalingConfig(num_workers=4),
                 run_config=RunConfig(name="orphans", storage_path=sys.argv[1])).fit()
    """
)


@pytest.mark.slow
def test_a_sigkilled_driver_leaves_no_worker_on_any_node(ray_cluster, tmp_path):
    import selectors

    import psutil

    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = dict(os.environ, RAY_ADDRESS=ray_cluster.address)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "results")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    text, deadline = "", time.monotonic() + 90
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while text.count("READY") < 4:
            assert time.monotonic() < deadline, f"workers never became ready: {text}"
            if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"driver exited early: {text}"
                text += chunk.decode()
    workers = [psutil.Process(int(line.split()[-1])) for line in text.splitlines() if "READY" in line]
    proc.kill()
    proc.wait()
    proc.stdout.close()
    gone, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"workers outlived their driver: {alive}"
    assert rafter_leftovers(timeout=20) == ([], [])


def test_a_local_storage_path_that_a_node_cannot_see_is_refused(ray_cluster, tmp_path):
    """The marker-file check itself, with stand-in actors: on one machine every node sees every path."""
    import ray

    from rafter._backends.ray.backend import RayBackend, _Prepared
    from rafter._backends.ray.layout import Place

    class Sees:
        def __init__(self, answer):
            self.sees = self
            self.answer = answer

        def remote(self, path):
            assert os.path.exists(path)  # the driver wrote the marker before asking
            return ray.put(self.answer)

    places = [Place(r, r, f"n{r}", f"10.0.0.{r + 1}", r, 0, 1, None, None) for r in range(2)]
    prepared = _Prepared(pg=None, actors={0: Sees(True), 1: Sees(False)}, places=places, token=b"t" * 16,
                         shipped={0: False, 1: False})
    backend = RayBackend()
    backend._driver_ip = "10.0.0.1"
    run_path = str(tmp_path / "results" / "run")
    with pytest.raises(ValueError) as info:
        backend._check_storage(run_path, prepared)
    assert "is a local folder, but the run's workers are on 2 nodes and 1 of them can't see it (node 10.0.0.2)" in str(
        info.value)
    assert os.listdir(run_path) == []  # the marker is gone
    prepared.actors[1] = Sees(True)
    backend._check_storage(run_path, prepared)  # shared: fine
    with pytest.raises(ValueError, match="lives in the driver's memory"):
        backend._check_storage("memory://bucket/run", prepared)


def counts_to_six(config):
    start = 0
    ckpt = train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            start = int(open(os.path.join(d, "step.txt")).read()) + 1
    for step in range(start, 6):
        import tempfile

        t = torch.ones(1)
        dist.all_reduce(t)
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "step.txt"), "w") as f:
                f.write(str(step))
            train.report({"step": step, "attempt": train.get_context().get_attempt()},
                         checkpoint=train.Checkpoint.from_directory(d))
        # In step with the driver: the run can't finish before the outside kill of report 1-3 has landed.
        train.collective.barrier()
    return start


def test_a_kill_from_outside_reaches_the_worker_on_its_node_and_the_run_recovers(ray_cluster, run_config):
    from rafter.testing import ChaosMonkey
    from rafter.train import FailureConfig

    trainer = TorchTrainer(counts_to_six, scaling_config=ScalingConfig(num_workers=4),
                           run_config=on_ray(run_config, name="chaos", failure_config=FailureConfig(max_failures=1)))
    monkey = ChaosMonkey(kills=1, seed=3)  # group.signal(rank, SIGKILL), delivered by the rank's actor
    monkey.attach(trainer)
    result = trainer.fit()
    assert len(monkey.done) == 1
    _, rank, _ = monkey.done[0]
    assert result.metrics == {"step": 5, "attempt": 2}
    assert f"Rank {rank} " in result.attempts[0]["error"] and "SIGKILL" in result.attempts[0]["error"]
    assert rafter_leftovers() == ([], [])
