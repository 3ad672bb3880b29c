"""``rafter check job.yaml``: everything that can be known before training, without training.

One line per check (✓ passed, ! works but worth knowing, ✗ problem). Exit code: 0 when nothing is
wrong, 1 when a check failed, 2 when the job file itself is wrong.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import List, Tuple

from rafter._cli.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, ConfigError

OK, WARN, FAIL = "✓", "!", "✗"


class Report:
    def __init__(self, stream) -> None:
        self.stream = stream
        self.lines: List[Tuple[str, str, str]] = []

    def add(self, mark: str, name: str, text: str) -> None:
        self.lines.append((mark, name, text))
        first, *rest = text.splitlines() or [""]
        self.stream.write(f"{mark} {name:<15} {first}\n")
        for line in rest:
            self.stream.write(f"  {'':<15} {line}\n")
        self.stream.flush()

    @property
    def failed(self) -> bool:
        return any(mark == FAIL for mark, _n, _t in self.lines)


def check_command(args) -> int:
    from rafter._cli.jobfile import load_callable_parts, load_job

    out = sys.stdout
    report = Report(out)
    try:
        job = load_job(args.job, args.set, load_train=False)
        from rafter._cli.cmd_run import cluster_kind

        cluster = job.values["cluster"]
        cluster += f" -> {cluster_kind(job)}" if cluster == "auto" else ""
        report.add(OK, "job file", f"{job.source}: valid ({job.scaling.num_workers} workers, cluster {cluster})")
        load_callable_parts(job)
    except ConfigError as exc:
        report.add(FAIL, "job file" if exc.path != "train" else "train function", str(exc))
        out.write("The job file is wrong; nothing else was checked.\n")
        return EXIT_CONFIG
    _check_function(job, report)
    _check_resources(job, report)
    _check_storage(job, report)
    _check_torch(job, report)
    if args.collective:
        _check_collective(job, report)
    if report.failed:
        out.write(f"{sum(m == FAIL for m, _n, _t in report.lines)} problem(s) found; fix them before `rafter run`.\n")
        return EXIT_FAILED
    out.write("All checks passed" + ("" if args.collective else " (add --collective to test an all-reduce "
                                                               "across the workers)") + ".\n")
    return EXIT_OK


def _check_function(job, report: Report) -> None:
    from rafter._util.pickling import dumps_payload

    fn = job.train_fn
    name = f"{job.values['train']}"
    try:
        payload = dumps_payload(fn, job.get("train_loop_config"))
    except Exception as exc:  # noqa: BLE001
        report.add(FAIL, "train function", f"{name} imports but can't be sent to the workers:\n{exc}")
        return
    report.add(OK, "train function", f"{name} imports and pickles ({len(payload) / 1024:.1f} KiB with its config)")


def _check_resources(job, report: Report) -> None:
    from rafter._cli.cmd_run import cluster_kind

    if cluster_kind(job) == "ray":
        _check_ray(job, report)
    else:
        _check_local(job, report)


def _check_local(job, report: Report) -> None:
    import logging

    from rafter._backends.local.backend import LocalBackend, available_gpus, cpu_plan, total_memory

    s = job.scaling.with_workers(job.scaling.max_workers)  # an elastic range: check its largest size
    n = s.num_workers
    plan = cpu_plan(s)
    text = f"{plan.wanted:g} CPUs asked ({n} workers x {s.cpus_per_worker or 1.0:g}); this machine has {plan.available}"
    if plan.oversubscribed:
        report.add(WARN, "CPUs", text + f": it will run oversubscribed, {plan.threads} torch thread(s) per worker")
    else:
        report.add(OK, "CPUs", text)
    if s.gpus_per_worker:
        have = available_gpus()
        mark = OK if s.gpus_per_worker * n <= have else FAIL
        report.add(mark, "GPUs", f"{s.gpus_per_worker * n:g} GPUs asked; this machine has {have}")
    else:
        report.add(OK, "GPUs", "none asked (use_gpu: false)")
    if s.memory_per_worker:
        have_mem = total_memory()
        mark = OK if s.memory_per_worker * n <= have_mem else FAIL
        report.add(mark, "memory", f"{s.memory_per_worker * n / 2**30:.1f} GiB asked; this machine has "
                                   f"{have_mem / 2**30:.1f} GiB")
    rafter_logger = logging.getLogger("rafter")
    was, rafter_logger.disabled = rafter_logger.disabled, True
    try:
        LocalBackend().check_resources(s)
    except ValueError as exc:
        if not report.failed:  # not already said by the GPU or memory line
            report.add(FAIL, "resources", str(exc))
    finally:
        rafter_logger.disabled = was


def _check_ray(job, report: Report) -> None:
    try:
        import ray
    except ImportError:
        report.add(FAIL, "Ray", "cluster: ray, but ray is not installed here. Fix: pip install 'rafter-train[ray]'")
        return
    address = job.values.get("address") or os.environ.get("RAY_ADDRESS") or "auto"  # never start a cluster
    try:
        _reachable(address)
        ray.init(address=address, ignore_reinit_error=True, logging_level="ERROR", log_to_driver=False)
        have = ray.cluster_resources()
    except Exception as exc:  # noqa: BLE001
        report.add(FAIL, "Ray", f"can't connect to the Ray cluster at {address}: {type(exc).__name__}: {exc}\n"
                                f"Fix: start one (ray start --head), or set address: (or RAY_ADDRESS) to its "
                                f"GCS address, host:6379")
        return
    finally_shutdown = ray.is_initialized()
    try:
        for name, amount in sorted(job.scaling.total_resources.items()):
            if not amount:
                continue
            got = have.get(name, 0)
            mark = OK if got >= amount else FAIL
            report.add(mark, f"Ray {name}", f"{amount:g} asked; the cluster has {got:g} in all")
    finally:
        if finally_shutdown:
            ray.shutdown()


def _reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not minutes, when a host:port address has nothing listening (ray.init retries long)."""
    import socket

    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address or not sep or not port.isdigit():
        return
    with socket.create_connection((host, int(port)), timeout=timeout_s):
        pass


def _check_storage(job, report: Report) -> None:
    from rafter._controller.storage_check import check_storage
    from rafter.train._validation import ConfigValueError
    from rafter._storage import Storage
    from rafter.train._config import default_storage_path

    root = job.configs["run_kwargs"].get("storage_path") or default_storage_path()
    try:
        check_storage(root)
    except ConfigValueError as exc:
        verdict = "can't be used" if "://" in root else "is not writable"
        report.add(FAIL, "storage", f"{root} {verdict}: {exc.problem()}\n"
                                    f"Fix: run.storage_path: a folder you can write to (or --set run.storage_path=...)")
        return
    try:
        storage = Storage(root)
    except Exception as exc:  # noqa: BLE001 - e.g. an fsspec protocol that is not installed
        report.add(FAIL, "storage", f"{root}: {type(exc).__name__}: {exc}")
        return
    created = []
    probe = storage.join(f".rafter-check-{uuid.uuid4().hex[:8]}")
    try:
        if storage.local:
            missing = storage.root
            while not os.path.exists(missing):
                created.append(missing)
                missing = os.path.dirname(missing)
        storage.makedirs(storage.root)
        storage.write_text_atomic(probe, "rafter check\n")
        if storage.read_text(probe) != "rafter check\n":
            raise OSError("the probe file read back different content")
        if storage.local:
            os.remove(probe)
        else:
            storage.fs.rm(probe)
    except Exception as exc:  # noqa: BLE001
        report.add(FAIL, "storage", f"{storage.root} is not writable: {type(exc).__name__}: {exc}\n"
                                    f"Fix: run.storage_path: a folder you can write to (or --set run.storage_path=...)")
        return
    finally:
        for folder in created:  # leave no folder behind that the check made
            try:
                os.rmdir(folder)
            except OSError:
                pass
    report.add(OK, "storage", f"{storage.root} is writable (a probe file was written, read and deleted)")


def _check_torch(job, report: Report) -> None:
    import torch
    import torch.distributed as dist

    backend = job.torch_config.resolve_backend(job.scaling.use_gpu)
    parts = [f"torch {torch.__version__}"]
    if torch.cuda._is_compiled():
        parts.append(f"CUDA {torch.version.cuda}")
        try:
            parts.append(f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
        except Exception:  # noqa: BLE001
            parts.append("NCCL unavailable")
    else:
        parts.append("CPU-only build (no CUDA, no NCCL)")
    available = {"gloo": dist.is_gloo_available(), "nccl": dist.is_nccl_available()}
    text = ", ".join(parts) + f"; process-group backend {backend}"
    if not dist.is_available() or not available.get(backend, False):
        report.add(FAIL, "torch", text + " is not available in this torch build.\nFix: "
                   + ("torch.backend: gloo, or scaling.use_gpu: false" if backend == "nccl"
                      else "install a torch build with distributed support"))
    else:
        report.add(OK, "torch", text + " is available")


def _check_collective(job, report: Report) -> None:
    from rafter._cli.probe import all_reduce_probe
    from rafter.train import FailureConfig, RunConfig, TrainingFailedError
    from rafter.train.torch import TorchTrainer

    storage = tempfile.mkdtemp(prefix="rafter-check-")
    n = job.scaling.min_workers
    try:
        trainer = TorchTrainer(
            all_reduce_probe,
            torch_config=job.torch_config,
            scaling_config=job.scaling.with_workers(n),
            run_config=RunConfig(name="all_reduce", storage_path=storage, failure_config=FailureConfig(0),
                                 cluster=job.values["cluster"], cluster_address=job.values["address"],
                                 hang_timeout_s=120),
        )
        start = time.time()
        result = trainer.fit()
        took = time.time() - start
        got = result.return_value or {}
        report.add(OK, "all-reduce", f"{n} workers ({got.get('backend')}, {got.get('device')}): sum of ranks+1 = "
                                     f"{got.get('sum'):g}, expected {got.get('expected'):g}; whole run {took:.1f}s")
    except TrainingFailedError as exc:
        report.add(FAIL, "all-reduce", f"across {n} workers failed:\n{exc}")
    except Exception as exc:  # noqa: BLE001
        report.add(FAIL, "all-reduce", f"could not start {n} workers: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(storage, ignore_errors=True)
