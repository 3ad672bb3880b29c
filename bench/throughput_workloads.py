"""The training steps that bench/throughput.py times, shared by the rafter side and the torchrun baseline
(bench/baselines/torchrun_throughput.py) so that both run exactly the same code.

Workloads: ``mlp`` (a 4-layer MLP, many short steps: framework overhead shows) and ``llama`` (the model of
examples/llama_finetune.py on fixed random tokens: a real transformer step).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Callable, Optional

import torch
import torch.distributed as dist
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")

WORKLOADS = {
    # name: default timed steps, warm-up steps
    "mlp": {"steps": 1500, "warmup": 50},
    "llama": {"steps": 400, "warmup": 10},  # fewer steps left the ratio to noise (+-5 %)
}


def parse_args(argv=None):
    """The command line both sides' scripts take: ``(workload, steps, warmup)``."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="mlp")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    args = parser.parse_args(argv)
    steps = args.steps or WORKLOADS[args.workload]["steps"]
    warmup = args.warmup if args.warmup is not None else WORKLOADS[args.workload]["warmup"]
    return args.workload, steps, warmup


def build(workload: str, seed: int = 0):
    """(model, loss_fn(model, batch), batches): the same on every rank, on CPU."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if workload == "mlp":
        model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
        batches = [(torch.randn(64, 256, generator=g), torch.randint(0, 10, (64,), generator=g)) for _ in range(8)]

        def loss_fn(m, batch):
            x, y = batch
            return nn.functional.cross_entropy(m(x), y)

        return model, loss_fn, batches
    if workload == "llama":
        if EXAMPLES not in sys.path:
            sys.path.insert(0, EXAMPLES)
        from llama_finetune import ByteTokenizer, build_model

        seq_len = 128
        model = build_model(ByteTokenizer.vocab_size, hidden=64, layers=2, heads=4, seq_len=seq_len)
        batches = [torch.randint(0, 256, (8, seq_len), generator=g) for _ in range(4)]

        def loss_fn(m, batch):
            return m(input_ids=batch, labels=batch).loss

        return model, loss_fn, batches
    raise ValueError(f"unknown workload {workload!r}; expected one of {sorted(WORKLOADS)}")


class Baton:
    """Rank 0's line to bench/throughput.py's coordinator, which lets one side at a time run its next
    segment of steps (``RAFTER_BENCH_BATON``: the coordinator's Unix socket). The two sides then take
    turns on the same cores within seconds of each other, so a machine that speeds up or slows down
    (a shared host does, by +-10 % over minutes) moves both alike instead of deciding the ratio."""

    ENV = "RAFTER_BENCH_BATON"

    def __init__(self, path: str, side: str) -> None:
        import socket

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rw")
        self.say(f"hello {side}")

    def say(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()

    @classmethod
    def from_env(cls, side: str) -> Optional["Baton"]:
        path = os.environ.get(cls.ENV)
        rank = dist.get_rank() if dist.is_initialized() else 0
        return cls(path, side) if path and rank == 0 else None

    def take(self) -> int:
        """Wait for this side's turn; returns how many steps to run (0: this side has run all its steps)."""
        self.say("ready")
        line = self.file.readline().split()
        return int(line[1]) if line and line[0] == "go" else 0

    def give_back(self, seconds: float) -> None:
        self.say(f"done {seconds!r}")


def _step(model, loss_fn, optimizer, batch, i: int, report) -> None:
    loss = loss_fn(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    value = loss.item()  # both sides read the loss every step, as a real loop that logs it does
    if report is not None:
        report({"step": i, "loss": value})


# Inside the timed segments: page faults (a heap that the allocator trims and regrows), this process's CPU
# time (every thread) and the training thread's own.
_inside = {"faults": 0, "cpu": 0.0, "thread_cpu": 0.0}
_threads_at_start: dict = {}  # thread_runtimes() after the warm-up


def _counters() -> tuple:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.thread_time()


def thread_runtimes() -> dict:
    """{thread name: ns on a CPU} for every thread of this process (Linux schedstat; {} elsewhere)."""
    out: dict = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        key = "main" if tid == str(os.getpid()) else name
        out[key] = out.get(key, 0) + ns
    return out


def _count(before: tuple) -> None:
    for key, a, b in zip(("faults", "cpu", "thread_cpu"), before, _counters()):
        _inside[key] += b - a


def _all_ranks(value: int) -> int:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value])
    dist.broadcast(t, src=0)  # rank 0 holds the baton; the others wait here for its turn
    return int(t.item())


def timed_steps(model, loss_fn, batches, steps: int, warmup: int,
                report: Optional[Callable[[dict], None]] = None, side: str = "?") -> float:
    """Run ``warmup + steps`` SGD steps; return the seconds the last ``steps`` took on this rank.

    ``report``, when given, is called after every step with a small metrics dict (rafter: train.report).
    Under bench/throughput.py's coordinator (``Baton``), the timed steps run in the segments it hands out,
    each timed from a barrier to a barrier, and the time is their sum.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for i in range(warmup):
        _step(model, loss_fn, optimizer, batches[i % len(batches)], i, report)
    _threads_at_start.update(thread_runtimes())
    baton = Baton.from_env(side) if dist.is_initialized() else None
    if os.environ.get(Baton.ENV) and dist.is_initialized():
        elapsed, i = 0.0, warmup
        while True:
            dist.barrier()  # every rank has stopped its clock before rank 0 says "ready" (and may be frozen)
            turn = _all_ranks(baton.take() if baton else 0)  # 0 once this side has run all its steps
            if turn <= 0:
                return elapsed
            dist.barrier()
            before, start = _counters(), time.perf_counter()
            for _ in range(turn):
                _step(model, loss_fn, optimizer, batches[i % len(batches)], i, report)
                i += 1
            dist.barrier()  # a segment ends when its slowest rank is done
            seconds = time.perf_counter() - start
            _count(before)
            elapsed += seconds
            if baton:
                baton.give_back(seconds)
    if dist.is_initialized():
        dist.barrier()  # every rank starts the clock together
    before, start = _counters(), time.perf_counter()
    for i in range(warmup, warmup + steps):
        _step(model, loss_fn, optimizer, batches[i % len(batches)], i, report)
    elapsed = time.perf_counter() - start
    _count(before)
    return elapsed


def memory() -> dict:
    """This process's USS, PSS and RSS in bytes. USS: pages no other process shares (what the worker adds);
    PSS: shared pages split between their sharers; RSS: every page mapped, shared or not."""
    import psutil

    info = psutil.Process().memory_full_info()
    return {"uss": info.uss, "pss": getattr(info, "pss", 0), "rss": info.rss}


def summarize(elapsed: float, steps: int) -> dict:
    """Collective: steps/s from the slowest rank, memory as the max over ranks. Same dict on every rank."""
    mem = dict(memory(), **{key: value / steps for key, value in _inside.items()})
    now = thread_runtimes()
    mem["threads_ms_per_step"] = {k: round((v - _threads_at_start.get(k, 0)) / 1e6 / steps, 3) for k, v in now.items()
                                  if v - _threads_at_start.get(k, 0) > 0}
    if dist.is_initialized():
        t = torch.tensor([elapsed])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        elapsed = t.item()
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mem)
    else:
        everyone = [mem]
    return {
        "steps_per_s": steps / elapsed,
        "elapsed_s": elapsed,
        **{key: max(m[key] for m in everyone) for key in ("uss", "pss", "rss")},
        # per rank, per timed step:
        "faults_per_step": [round(m["faults"], 1) for m in everyone],
        "cpu_ms_per_step": [round(m["cpu"] * 1e3, 3) for m in everyone],
        "thread_cpu_ms_per_step": [round(m["thread_cpu"] * 1e3, 3) for m in everyone],
        "threads_ms_per_step": [m["threads_ms_per_step"] for m in everyone],  # includes the waits between turns
    }
