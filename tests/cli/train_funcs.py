"""Train functions the CLI tests name in their job files (``train: <this file>:<function>``)."""

import os
import tempfile

from rafter import train


def steps(config):
    """Reports ``config["steps"]`` times (default 10) and returns a JSON-able value."""
    ctx = train.get_context()
    print(f"stdout of rank {ctx.get_world_rank()}")  # never on the stdout of `rafter run --json`
    for i in range(config.get("steps", 10)):
        train.report({"step": i, "loss": 1.0 / (i + 1), "world": ctx.get_world_size()})
    return {"rank": ctx.get_world_rank(), "steps": config.get("steps", 10)}


def fails_on_rank_1(config):
    train.report({"step": 0})
    if train.get_context().get_world_rank() == 1:
        raise ValueError("rank 1 gives up on purpose")
    return "unreachable"


def with_checkpoints(config):
    rank = train.get_context().get_world_rank()
    for i in range(config.get("steps", 3)):
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "state.txt"), "w") as f:
                    f.write(str(i))
                train.report({"step": i, "loss": 1.0 / (i + 1)}, checkpoint=train.Checkpoint.from_directory(d))
        else:
            train.report({"step": i, "loss": 1.0 / (i + 1)})


def returns_object(config):
    train.report({"x": 1})
    return object()


def fails_once(config):
    ctx = train.get_context()
    train.report({"attempt": ctx.get_attempt()})
    if ctx.get_attempt() == 1 and ctx.get_world_rank() == 1:
        raise RuntimeError("first attempt fails")
    return ctx.get_attempt()
