"""prepare_model(parallel_strategy="fsdp") and the full-state-dict checkpoint helpers, on real gloo."""

import os

import pytest
import torch
import torch.distributed as dist
from torch import nn

import rafter.train as train
from rafter.train import Checkpoint, ScalingConfig
from rafter.train.torch import TorchTrainer


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.lin(x))


class Net(nn.Module):
    """Embedding-free stand-in for a transformer: input proj, a ModuleList of blocks, a head."""

    def __init__(self, width=6, depth=3):
        super().__init__()
        self.inp = nn.Linear(3, width)
        self.layers = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        x = self.inp(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def _batches(steps=4, n=8):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, generator=g), torch.randn(n, 1, generator=g)) for _ in range(steps)]


def _train(model, opt, rank=0, world=1):
    for x, y in _batches():
        shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
        loss = nn.functional.mse_loss(model(x[shard]), y[shard])
        opt.zero_grad()
        loss.backward()
        opt.step()


def fsdp_train(config):
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    from rafter.train.torch import get_state_dict, load_checkpoint_file, load_state_dict, prepare_model

    ctx = train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(0)
    model = prepare_model(Net(), parallel_strategy="fsdp")
    assert isinstance(model, FSDPModule) and all(isinstance(b, FSDPModule) for b in model.layers)
    assert isinstance(model.layers[0].lin.weight, DTensor)
    local = model.layers[0].lin.weight.to_local().shape[0]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    _train(model, opt, rank, world)

    state = get_state_dict(model, opt)
    ckpt = None
    if rank == 0:
        path = os.path.join(config["tmp"], "ckpt")
        os.makedirs(path, exist_ok=True)
        torch.save(state, os.path.join(path, "state.pt"))
        ckpt = Checkpoint.from_directory(path)
    else:
        assert state == {}
    train.report({"local_rows": local}, checkpoint=ckpt)

    # Load into a freshly initialised FSDP model and check every rank got the trained weights back.
    torch.manual_seed(1)
    fresh = prepare_model(Net(), parallel_strategy="fsdp")
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.05)
    loaded = {}
    if rank == 0:
        loaded = load_checkpoint_file(os.path.join(path, "state.pt"))
    load_state_dict(fresh, loaded, fresh_opt)
    same = all(torch.equal(a.full_tensor(), b.full_tensor()) for a, b in zip(model.parameters(), fresh.parameters()))
    # One more identical step on both: equal only if the optimizer state (Adam moments) came back too.
    for m, o in ((model, opt), (fresh, fresh_opt)):
        x, y = _batches(1)[0]
        o.zero_grad()
        nn.functional.mse_loss(m(x), y).backward()
        o.step()
    same_after_step = all(torch.equal(a.full_tensor(), b.full_tensor())
                          for a, b in zip(model.parameters(), fresh.parameters()))
    flags = torch.tensor([float(same), float(same_after_step)])
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    train.report({"reloaded_equal": bool(flags[0]), "optimizer_restored": bool(flags[1])})
    return {k: v.tolist() for k, v in state["model"].items()} if rank == 0 else None


def test_fsdp_trains_like_one_process_and_its_checkpoint_round_trips(run_config, tmp_path):
    result = TorchTrainer(
        fsdp_train, train_loop_config={"tmp": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2), run_config=run_config(name="fsdp"),
    ).fit()
    assert result.metrics == {"reloaded_equal": True, "optimizer_restored": True}
    assert result.metrics_history[0]["local_rows"] == 3  # 6 rows of each block's weight, split in 2

    torch.manual_seed(0)
    ref = Net()
    _train(ref, torch.optim.Adam(ref.parameters(), lr=0.05))
    got = result.return_value
    assert sorted(got) == sorted(ref.state_dict())  # plain names: no "module." / "_fsdp" prefixes
    for name, value in ref.state_dict().items():
        assert torch.allclose(torch.tensor(got[name]), value, atol=1e-5), name

    # The saved file is an ordinary state dict: it loads into a plain, unwrapped model.
    saved = torch.load(os.path.join(result.checkpoint.path, "state.pt"), weights_only=True)
    plain = Net()
    plain.load_state_dict(saved["model"])
    assert torch.allclose(plain.head.weight, ref.head.weight, atol=1e-5)


def fsdp_options(config):
    from rafter.train.torch import prepare_model

    try:
        prepare_model(Net(), parallel_strategy="fsdp", parallel_strategy_kwargs={"reshard_after_fwd": True})
    except TypeError as exc:
        unknown = str(exc)
    model = prepare_model(
        Net(), parallel_strategy="fsdp",
        parallel_strategy_kwargs={"mp_policy": {"param_dtype": torch.bfloat16, "reduce_dtype": torch.float32},
                                  "shard_modules": [Block]},
    )
    out = model(torch.randn(4, 3))
    out.float().sum().backward()
    return {"unknown": unknown, "out_dtype": str(out.dtype), "grad_dtype": str(model.head.weight.grad.dtype)}


def test_fsdp_options_pass_through_and_unknown_ones_are_named(run_config):
    result = TorchTrainer(fsdp_options, scaling_config=ScalingConfig(num_workers=2),
                          run_config=run_config(name="opts")).fit()
    value = result.return_value
    assert "unknown parallel_strategy_kwargs ['reshard_after_fwd']" in value["unknown"]
    assert "reshard_after_forward" in value["unknown"]
    assert value["out_dtype"] == "torch.bfloat16"  # mp_policy given as a dict took effect
    assert value["grad_dtype"] == "torch.float32"  # gradients land in the fp32 sharded params


def fsdp_one_worker():
    from torch.distributed.fsdp import FSDPModule

    from rafter.train.torch import get_state_dict, prepare_model

    model = prepare_model(Net(), parallel_strategy="fsdp",
                          parallel_strategy_kwargs={"mp_policy": {"param_dtype": torch.bfloat16}})
    out = model(torch.randn(2, 3))
    out.float().sum().backward()
    return {"fsdp": isinstance(model, FSDPModule), "out": str(out.dtype),
            "keys": sorted(get_state_dict(model)["model"])}


def test_fsdp_with_one_worker_still_applies_mp_policy(run_config):
    value = TorchTrainer(fsdp_one_worker, scaling_config=ScalingConfig(num_workers=1),
                         run_config=run_config(name="one")).fit().return_value
    assert value["fsdp"] is True and value["out"] == "torch.bfloat16"
    assert value["keys"] == sorted(Net().state_dict())
