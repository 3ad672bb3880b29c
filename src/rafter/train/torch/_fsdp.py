"""``prepare_model(parallel_strategy="fsdp")``: shard a model with FSDP2 (``torch.distributed.fsdp.fully_shard``).

What gets sharded, in this order (FSDP2 needs inner units before the root):

1. the *blocks*: every element of the outermost ``nn.ModuleList`` s of the model (a transformer's
   layers, e.g. ``model.model.layers`` of a Hugging Face Llama), or, when the model has no
   ``ModuleList``, every direct child module that holds parameters;
2. the root module, which takes every parameter not in a block (embeddings, final norm, head).

Each block is one all-gather in forward and one reduce-scatter in backward, so peak memory is one
block's full parameters plus everyone's shards. Pass ``parallel_strategy_kwargs={"shard_modules":
(MyBlock,)}`` to pick the blocks by class instead. Every other key (``mp_policy``,
``reshard_after_forward``, ``offload_policy``, ``mesh``, ...) goes to ``fully_shard`` unchanged;
``mp_policy`` may also be a dict of ``MixedPrecisionPolicy`` arguments. Works with NCCL on GPUs and
with gloo on CPU.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def find_blocks(model: nn.Module, classes: Optional[Tuple[type, ...]] = None) -> List[nn.Module]:
    """The submodules ``shard_model`` wraps one by one (see the module docstring), outermost first."""
    if classes:
        blocks = []

        def visit(module: nn.Module) -> None:
            for child in module.children():
                if isinstance(child, classes):
                    blocks.append(child)
                else:
                    visit(child)

        visit(model)
        return [b for b in blocks if _has_params(b)]
    lists: List[nn.Module] = []

    def visit_lists(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.ModuleList):
                lists.extend(m for m in child if _has_params(m))
            else:
                visit_lists(child)

    visit_lists(model)
    if lists:
        return lists
    return [c for c in model.children() if _has_params(c)]


def _fully_shard_params() -> set:
    from torch.distributed.fsdp import fully_shard

    return set(inspect.signature(fully_shard).parameters) - {"module"}


def shard_model(model: nn.Module, device: torch.device, kwargs: Dict[str, Any]) -> nn.Module:
    """Shard ``model`` (already on ``device``) across the process group's ranks; returns the same module."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    import torch.distributed as dist

    kwargs = dict(kwargs)
    classes = kwargs.pop("shard_modules", None)
    if classes is not None:
        classes = tuple(classes) if isinstance(classes, (list, tuple, set)) else (classes,)
        bad = [c for c in classes if not (isinstance(c, type) and issubclass(c, nn.Module))]
        if bad:
            raise TypeError(
                f"prepare_model(parallel_strategy='fsdp', parallel_strategy_kwargs={{'shard_modules': ...}}): "
                f"expected nn.Module classes, got {bad!r}. Pass e.g. (LlamaDecoderLayer,)."
            )
    known = _fully_shard_params()
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(
            f"prepare_model(parallel_strategy='fsdp'): unknown parallel_strategy_kwargs {unknown}. "
            f"This torch's fully_shard accepts {sorted(known)}, and rafter adds 'shard_modules'."
        )
    if isinstance(kwargs.get("mp_policy"), dict):
        kwargs["mp_policy"] = MixedPrecisionPolicy(**kwargs["mp_policy"])
    if "mesh" not in kwargs:
        kwargs["mesh"] = init_device_mesh(device.type, (dist.get_world_size(),))
    blocks = find_blocks(model, classes)
    if classes and not blocks:
        raise ValueError(
            f"prepare_model(parallel_strategy='fsdp'): no submodule of {type(model).__name__} is an instance of "
            f"{[c.__name__ for c in classes]}, so nothing but the root would be sharded. Check shard_modules."
        )
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model
