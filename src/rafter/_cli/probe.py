"""The train function of ``rafter check --collective``: one all-reduce across the real worker group."""

from __future__ import annotations


def all_reduce_probe(config=None) -> dict:
    """Each rank contributes rank + 1; every rank must see the sum 1 + 2 + ... + world_size."""
    import torch
    import torch.distributed as dist

    from rafter import train

    ctx = train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = train.torch.get_device()
    value = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(value)
    got, expected = value.item(), world * (world + 1) / 2
    if got != expected:
        raise RuntimeError(f"all_reduce gave {got} on rank {rank}, expected {expected} (world size {world})")
    return {"sum": got, "expected": expected, "backend": dist.get_backend(), "device": str(device)}
