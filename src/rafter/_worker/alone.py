"""Notice a multi-worker run whose workers train alone, and say so once on rank 0.

The sign is exact and cheap: torch counts the collectives issued on each process group (its sequence
number). Workers that train together (DDP, FSDP, a Lightning or Hugging Face trainer set up for the run)
have issued collectives by the time they report; a default ``lightning.Trainer(accelerator="cpu")``, or a
model never wrapped with ``prepare_model``, issues none, and each worker trains its own copy.

The check runs at rank 0's first report with a checkpoint or its second report, whichever comes first
(a first report may come before any training), and never again.
"""

from __future__ import annotations

import sys
import weakref
from typing import Optional

_checked: "weakref.WeakSet" = weakref.WeakSet()  # the sessions (one per worker, per attempt) already checked


def notice_report(session, index: int, with_checkpoint: bool) -> None:
    spec = session.spec
    if session in _checked or spec.rank != 0 or spec.world_size <= 1 or not (with_checkpoint or index >= 1):
        return
    _checked.add(session)
    if collectives_issued() == 0:
        warn(alone_message(spec.world_size, index))


def warn(message: str) -> None:
    """A warning from inside a worker, straight to its stderr (the terminal and ``logs/rank_N.log``).

    Not ``warnings.warn``: a worker forked from a process that records warnings (pytest, a notebook's
    ``catch_warnings``) would record it where nobody looks.
    """
    sys.stderr.write(f"[rafter] warning: {message}\n")
    sys.stderr.flush()


def collectives_issued() -> Optional[int]:
    """How many collectives this process issued on all its process groups; None when torch can't say."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    try:
        groups = list(dist.distributed_c10d._world.pg_map)
        return sum(group._get_sequence_number_for_group() for group in groups)
    except Exception:  # noqa: BLE001 - a torch without these internals: no verdict rather than a wrong one
        return None


def alone_message(world_size: int, index: int) -> str:
    fix = (
        "wrap the model with model = rafter.train.torch.prepare_model(model) (DistributedDataParallel) "
        "and shard the data with loader = rafter.train.torch.prepare_data_loader(loader)"
    )
    if "lightning.pytorch" in sys.modules or "pytorch_lightning" in sys.modules:
        fix += (
            "; a Lightning Trainer needs rafter's strategy and cluster environment: "
            "pl.Trainer(..., strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()]), then "
            "trainer = prepare_trainer(trainer)  "
            "# from rafter.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer"
        )
    return (
        f"this run has {world_size} workers, but by report {index + 1} of rank 0 no collective "
        f"operation (all-reduce, broadcast, barrier) has gone over their process group: each worker is "
        f"training its own copy of the model, alone. Likely fix: {fix}. If the workers are meant to work "
        f"independently, ignore this warning."
    )
