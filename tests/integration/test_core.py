"""Core behaviour with real worker processes and real gloo."""

import os

import pytest
import torch
import torch.distributed as dist

import rafter.train as train
from rafter.train import ScalingConfig, TrainingFailedError
from rafter.train.torch import TorchTrainer


def fit(fn, n=2, config=None, run_config=None, **scaling):
    return TorchTrainer(
        fn,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=n, **scaling),
        run_config=run_config,
    ).fit()


# -- ranks, context, reports, return values ---------------------------------------------------
def report_context():
    ctx = train.get_context()
    t = torch.tensor([ctx.get_world_rank()], dtype=torch.float32)
    dist.all_reduce(t)
    train.report({
        "rank": ctx.get_world_rank(), "world": ctx.get_world_size(), "local_rank": ctx.get_local_rank(),
        "local_world": ctx.get_local_world_size(), "node_rank": ctx.get_node_rank(),
        "name": ctx.get_experiment_name(), "sum": t.item(), "env_rank": int(os.environ["RANK"]),
        "threads": torch.get_num_threads(), "attempt": ctx.get_attempt(),
    })
    return {"rank": ctx.get_world_rank(), "cwd": os.getcwd()}


def test_ranks_world_sizes_and_return_value(run_config):
    result = fit(report_context, n=4, run_config=run_config(name="ctx"))
    m = result.metrics
    assert m == {"rank": 0, "world": 4, "local_rank": 0, "local_world": 4, "node_rank": 0, "name": "ctx",
                 "sum": 6.0, "env_rank": 0, "threads": 1, "attempt": 1}
    assert result.return_value == {"rank": 0, "cwd": os.getcwd()}
    assert result.metrics_history == [m]
    assert result.error is None


def no_args():
    train.report({"loss": 1.5})
    return "no-args"


def with_config(config):
    for i in range(config["steps"]):
        train.report({"step": i, "loss": torch.tensor(1.0 / (i + 1))})
    return config["steps"]


def test_train_function_with_and_without_config(run_config):
    assert fit(no_args, run_config=run_config(name="a")).return_value == "no-args"
    result = fit(with_config, config={"steps": 3}, run_config=run_config(name="b"))
    assert result.return_value == 3
    steps = [r["step"] for r in result.metrics_history]
    assert steps == [0, 1, 2]
    assert result.metrics == {"step": 2, "loss": pytest.approx(1 / 3)}  # 0-d tensor became a number
    df = result.metrics_dataframe
    assert list(df["step"]) == [0, 1, 2] and list(df.columns) == ["step", "loss"]


def every_rank_reports():
    rank = train.get_context().get_world_rank()
    for i in range(3):
        train.report({"i": i, "rank": rank})
    return rank


def test_metrics_without_checkpoint_are_kept_and_written(run_config):
    result = fit(every_rank_reports, n=3, run_config=run_config(name="m"))
    assert result.metrics == {"i": 2, "rank": 0}
    assert result.return_value == 0
    with open(os.path.join(result.path, "metrics.jsonl")) as f:
        assert len(f.read().splitlines()) == 3


# -- DDP really averages gradients -------------------------------------------------------------
def _batches(seed=0, n=8, steps=5):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, generator=g), torch.randn(n, 1, generator=g)) for _ in range(steps)]


def ddp_train(config):
    torch.manual_seed(0)
    model = train.torch.prepare_model(torch.nn.Linear(3, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ctx = train.get_context()
    world, rank = ctx.get_world_size(), ctx.get_world_rank()
    for x, y in _batches():
        shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        loss = torch.nn.functional.mse_loss(model(x[shard]), y[shard])
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(params) for _ in range(world)]
    dist.all_gather(gathered, params)
    train.report({"same_on_all_ranks": all(torch.equal(gathered[0], g) for g in gathered)})
    return params.tolist()


def test_ddp_averages_gradients_like_one_process_on_the_full_batch(run_config):
    result = fit(ddp_train, n=2, run_config=run_config(name="ddp"))
    assert result.metrics["same_on_all_ranks"] is True
    assert isinstance(result.return_value, list)

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in _batches():
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    expected = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.allclose(torch.tensor(result.return_value), expected, atol=1e-6)


def single_worker_not_wrapped():
    model = train.torch.prepare_model(torch.nn.Linear(2, 2))
    return type(model).__name__


def test_prepare_model_wraps_only_when_world_size_above_one(run_config):
    assert fit(single_worker_not_wrapped, n=1, run_config=run_config(name="one")).return_value == "Linear"
    assert fit(single_worker_not_wrapped, n=2, run_config=run_config(name="two")).return_value == (
        "DistributedDataParallel")


# -- data loader sharding ----------------------------------------------------------------------
def shard_indices(config):
    ds = torch.utils.data.TensorDataset(torch.arange(config["n"]))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=config["shuffle"])
    loader = train.torch.prepare_data_loader(loader)
    seen = [int(i) for (batch,) in loader for i in batch]
    gathered = [None] * train.get_context().get_world_size()
    dist.all_gather_object(gathered, seen)
    return gathered


@pytest.mark.parametrize("shuffle", [False, True])
def test_prepare_data_loader_shards_without_overlap_and_covers_the_dataset(run_config, shuffle):
    parts = fit(shard_indices, n=3, config={"n": 30, "shuffle": shuffle},
                run_config=run_config(name=f"dl{shuffle}")).return_value
    assert len(parts) == 3
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(30))
    assert all(len(p) == 10 for p in parts)


# -- the driver's cwd and sys.path reach workers -----------------------------------------------
def uses_user_module():
    import my_local_helper  # importable only through the driver's sys.path

    with open("data.txt") as f:  # relative to the driver's cwd
        return my_local_helper.VALUE + f.read()


def test_workers_start_in_driver_cwd_with_driver_sys_path(run_config, tmp_path, monkeypatch):
    (tmp_path / "my_local_helper.py").write_text("VALUE = 'helper+'\n")
    (tmp_path / "data.txt").write_text("data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert fit(uses_user_module, n=2, run_config=run_config(name="cwd")).return_value == "helper+data"


# -- logs --------------------------------------------------------------------------------------
def prints_something():
    import sys

    rank = train.get_context().get_world_rank()
    print(f"hello from {rank}")
    print(f"warning from {rank}", file=sys.stderr)


def test_worker_output_is_prefixed_and_kept_per_rank(run_config, capfd):
    result = fit(prints_something, n=2, run_config=run_config(name="logs"))
    out, err = capfd.readouterr()
    assert "[rank 0] hello from 0" in out and "[rank 1] hello from 1" in out
    assert "[rank 1] warning from 1" in err
    with open(os.path.join(result.path, "logs", "rank_1.log")) as f:
        text = f.read()
    assert "hello from 1" in text and "warning from 1" in text
    logs = sorted(os.listdir(os.path.join(result.path, "logs")))
    assert [n for n in logs if not n.startswith(("rank_", "stacks_rank_", "collectives_rank_"))] == []  # the train function came
    # over each worker's channel: no payload file is left next to the logs


# -- failures (basics) -------------------------------------------------------------------------
def fails_on_rank_1():
    rank = train.get_context().get_world_rank()
    if rank == 1:
        raise ValueError("bad batch on rank 1")
    t = torch.ones(1)
    dist.all_reduce(t)  # rank 0 blocks here until rank 1 is gone
    return rank


def test_exception_on_one_rank_is_reported_first(run_config):
    with pytest.raises(TrainingFailedError) as info:
        fit(fails_on_rank_1, n=2, run_config=run_config(name="exc"))
    err = info.value
    first = err.first_line
    assert first.startswith("Rank 1 (pid ")
    assert "raised ValueError: bad batch on rank 1" in first
    assert "Traceback" in str(err) and "fails_on_rank_1" in str(err)
    assert err.rank == 1 and err.kind == "exception"
    assert "rank 0" in str(err).split("Consequences", 1)[1]


def test_more_gpus_than_the_machine_has_fails_before_any_process(run_config):
    with pytest.raises(ValueError) as info:
        fit(no_args, n=2, use_gpu=True, run_config=run_config(name="gpu"))
    assert "asks for 2 GPUs" in str(info.value) and "this machine has 0" in str(info.value)


def test_unknown_resource_is_rejected_by_the_local_backend(run_config):
    with pytest.raises(ValueError, match="'TPU'"):
        fit(no_args, n=1, resources_per_worker={"TPU": 1}, run_config=run_config(name="tpu"))


def test_more_cpus_than_the_machine_has_warns_once_and_runs(run_config, caplog):
    result = fit(report_context, n=2, resources_per_worker={"CPU": 64}, run_config=run_config(name="cpu"))
    warnings = [r for r in caplog.records if "oversubscribed" in r.getMessage()]
    assert len(warnings) == 1 and "128 CPUs (2 workers x 64 CPU)" in warnings[0].getMessage()
    assert result.metrics["threads"] >= 1


def listening_addresses():
    import psutil

    t = torch.ones(1)
    dist.all_reduce(t)
    mine = [c.laddr.ip for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    gathered = [None] * train.get_context().get_world_size()
    dist.all_gather_object(gathered, mine)
    return gathered


def test_local_mode_listens_on_loopback_only(run_config):
    per_rank = fit(listening_addresses, n=2, run_config=run_config(name="lo")).return_value
    addresses = [ip for ips in per_rank for ip in ips]
    assert addresses, "rank 0 hosts the rendezvous store, so something must listen"
    assert all(ip in ("127.0.0.1", "::1") for ip in addresses), per_rank
