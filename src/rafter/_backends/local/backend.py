"""The embedded default backend: workers are local processes forked from one zygote, no server to start."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import NamedTuple, Optional

from rafter._backends.local import warm
from rafter._backends.local.group import LocalWorkerGroup
from rafter._backends.local.zygote import Zygote
from rafter._worker.spec import WorkerSpec
from rafter.train._config import ScalingConfig
from rafter.train._validation import ConfigValueError

logger = logging.getLogger("rafter")


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_gpus() -> int:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        import torch
    if not torch.cuda._is_compiled():
        return 0
    return torch.cuda.device_count()


def total_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


class CpuPlan(NamedTuple):
    """How a request's CPUs fit this machine: asked in all, available, torch threads per worker."""

    wanted: float
    available: int
    threads: int

    @property
    def oversubscribed(self) -> bool:
        return self.wanted > self.available


def cpu_plan(scaling: ScalingConfig) -> CpuPlan:
    n = scaling.num_workers
    per_worker = scaling.cpus_per_worker or 1.0
    cpus = available_cpus()
    threads = max(1, int(per_worker))
    if per_worker * n > cpus:
        threads = max(1, min(threads, cpus // n))
    return CpuPlan(per_worker * n, cpus, threads)


class LocalBackend:
    """Workers on this machine, forked from a zygote that has torch imported; talks to them over socketpairs."""

    name = "local"
    node_host = "127.0.0.1"

    def __init__(self) -> None:
        self._zygote: Optional[Zygote] = None

    # -- preflight -----------------------------------------------------------------------------
    def capacity(self, scaling: ScalingConfig) -> int:
        """Workers this machine holds without oversubscribing: one per GPU, or its CPUs / CPUs per worker."""
        if scaling.gpus_per_worker:
            return int(available_gpus() // scaling.gpus_per_worker)
        return max(1, int(available_cpus() // (scaling.cpus_per_worker or 1.0)))

    def check_resources(self, scaling: ScalingConfig) -> int:
        """Raise ``ConfigValueError`` (a ``ValueError``) for a request this machine can never meet; return torch
        threads per worker. Ray-only placement settings, which the local backend ignores, warn. An elastic
        request is checked at its minimum."""
        if scaling.elastic:
            scaling = scaling.with_workers(scaling.min_workers)
        unknown = sorted(scaling.custom_resources)
        if unknown:
            raise ConfigValueError("ScalingConfig", "resources_per_worker", scaling.resources_per_worker, "", text=(
                f"ScalingConfig(resources_per_worker=...) names {', '.join(map(repr, unknown))}, which the local "
                f"backend does not know (it knows 'CPU', 'GPU' and 'memory'). Custom resources need a Ray "
                f"cluster: RunConfig(cluster='ray')."))
        n = scaling.num_workers
        if scaling.gpus_per_worker:
            have = available_gpus()
            want = scaling.gpus_per_worker * n
            if want > have:
                raise ConfigValueError("ScalingConfig", "num_workers", n, "", text=(
                    f"ScalingConfig asks for {want:g} GPUs ({n} workers x {scaling.gpus_per_worker:g} GPU) but this "
                    f"machine has {have}. Use ScalingConfig(num_workers={max(have, 1) if have else n}, "
                    f"use_gpu={bool(have)}) or run on a machine or Ray cluster with more GPUs."))
            if scaling.gpus_per_worker != 1:
                raise ConfigValueError("ScalingConfig", "resources_per_worker", scaling.resources_per_worker, "", text=(
                    f"ScalingConfig(resources_per_worker={{'GPU': {scaling.gpus_per_worker:g}}}): the local backend "
                    f"gives each worker exactly one GPU."))
        memory = scaling.memory_per_worker
        if memory:
            have = total_memory()
            if memory * n > have:
                raise ConfigValueError("ScalingConfig", "resources_per_worker", scaling.resources_per_worker, "", text=(
                    f"ScalingConfig asks for {memory * n / 2**30:.1f} GiB of memory ({n} workers x "
                    f"{memory / 2**30:.2f} GiB) but this machine has {have / 2**30:.1f} GiB in all."))
        plan = cpu_plan(scaling)
        if plan.oversubscribed:
            logger.warning(
                "ScalingConfig asks for %g CPUs (%d workers x %g CPU) but this machine has %d; running "
                "oversubscribed with %d torch thread%s per worker.",
                plan.wanted, n, scaling.cpus_per_worker or 1.0, plan.available, plan.threads,
                "" if plan.threads == 1 else "s",
            )
        ignored = [f"{k}={v!r}" for k, v, default in (("accelerator_type", scaling.accelerator_type, None),
                                                       ("placement_strategy", scaling.placement_strategy, "PACK"))
                   if v != default]
        if ignored:
            logger.warning("ScalingConfig(%s) is ignored by the local backend (all workers run on this machine); "
                           "it applies on a Ray cluster: RunConfig(cluster='ray').", ", ".join(ignored))
        return plan.threads

    @staticmethod
    def worker_env() -> dict:
        # Keep gloo's and NCCL's bootstrap sockets on loopback, unless the user chose an interface.
        return {var: "lo" for var in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME") if var not in os.environ}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, use_gpu: bool) -> None:
        if self._zygote is None:
            self._zygote = warm.acquire(use_gpu, Zygote)

    def start_group(self, scaling: ScalingConfig, template: WorkerSpec, payload: bytes,
                    echo: bool = True) -> LocalWorkerGroup:
        """Rank r is local rank r on node 0, on GPU r when the run uses GPUs; rank 0's store on loopback."""
        assert self._zygote is not None, "start() must precede start_group()"
        n = scaling.num_workers
        env = dict(template.env, **self.worker_env())
        specs = [
            dataclasses.replace(template, rank=r, node_rank=0, local_rank=r, local_world_size=n,
                                rdzv_host=self.node_host, device_index=r if scaling.use_gpu else None, env=env)
            for r in range(n)
        ]
        return LocalWorkerGroup(self._zygote, specs, payload, echo=echo)

    def shutdown(self) -> None:
        if self._zygote is not None:
            warm.release(self._zygote)  # kept for the next fit() in this process, or closed
            self._zygote = None
