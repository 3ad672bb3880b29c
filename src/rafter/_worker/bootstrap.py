"""The life of one worker, identical on every backend.

1. apply the spec (env, cwd, sys.path, threads, device), arm faulthandler for crashes and stack dumps;
2. rendezvous: rank 0 binds a listening socket (port 0, no bind-then-close race) on the host the
   backend chose, hosts the TCPStore on it and announces the port; the others wait for it;
3. ``init_process_group``, then call the user's function with or without its config;
4. send ``Finished`` with the return value, or ``Errored`` with a record of the exception.

Messages go to the driver over the channel as the records of ``rafter._worker.messages``; the local
backend sends the pickled train function over the same channel first (``Payload``).
"""

from __future__ import annotations

import datetime
import faulthandler
import inspect
import os
import signal
import socket
import sys
import time
from typing import Any, Callable, Optional

from rafter._worker import collectives, preemption
from rafter._worker import messages as msg
from rafter._worker.channel import Channel
from rafter._worker.records import exception_record
from rafter._worker.session import WorkerSession, set_session
from rafter._worker.spec import WorkerSpec

STACK_DUMP_SIGNAL = signal.SIGUSR1


def _apply_spec(spec: WorkerSpec) -> None:
    os.environ.update(spec.env)
    os.environ.update(
        RANK=str(spec.rank),
        WORLD_SIZE=str(spec.world_size),
        LOCAL_RANK=str(spec.local_rank),
        LOCAL_WORLD_SIZE=str(spec.local_world_size),
        NODE_RANK=str(spec.node_rank),
        GROUP_RANK=str(spec.node_rank),
    )
    if spec.cwd and os.path.isdir(spec.cwd):
        os.chdir(spec.cwd)
    if spec.sys_path:
        sys.path[:] = list(spec.sys_path)
    # A crash (SIGSEGV, SIGABRT, ...) prints the Python stack of every thread to stderr, which the
    # backend captures; SIGUSR1 writes the same to a file without stopping the process (hang dumps).
    faulthandler.enable(file=sys.stderr, all_threads=True)
    os.makedirs(spec.log_dir, exist_ok=True)
    stack_file = open(spec.stack_file, "a")  # append: a dump after the driver emptied the file starts at 0
    faulthandler.register(STACK_DUMP_SIGNAL, file=stack_file, all_threads=True, chain=False)
    _keep_alive.append(stack_file)
    collectives.arm(spec.log_dir, spec.rank, spec.attempt)


_keep_alive: list = []


def _setup_torch(spec: WorkerSpec):
    import torch

    torch.set_num_threads(max(1, spec.num_threads))
    if spec.use_gpu and spec.device_index is not None:
        torch.cuda.set_device(spec.device_index)
    return torch


def _rendezvous(spec: WorkerSpec, channel: Channel):
    """Create the process group's store without the user setting MASTER_ADDR/PORT."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=spec.timeout_s)
    if spec.rank == 0:
        listener = socket.create_server((spec.rdzv_host, 0), backlog=max(128, spec.world_size))
        port = listener.getsockname()[1]
        store = dist.TCPStore(
            spec.rdzv_host,
            port,
            spec.world_size,
            is_master=True,
            timeout=timeout,
            wait_for_workers=False,
            master_listen_fd=listener.fileno(),
        )
        _keep_alive.append(listener)
        channel.send(msg.Rendezvous(spec.rdzv_host, port))
        host = spec.rdzv_host
    else:
        message = channel.recv()
        assert isinstance(message, msg.Rendezvous), message
        host, port = message.host, message.port
        store = dist.TCPStore(host, port, spec.world_size, is_master=False, timeout=timeout)
    os.environ["MASTER_ADDR"] = host
    os.environ["MASTER_PORT"] = str(port)
    store = dist.PrefixStore(f"rafter/attempt_{spec.attempt}", store)
    dist.init_process_group(
        backend=spec.backend, store=store, rank=spec.rank, world_size=spec.world_size, timeout=timeout
    )
    return store


def _call_user_function(fn: Callable, config: Optional[dict]) -> Any:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = None
    if params is not None and len(params) == 0:
        return fn()
    return fn(config if config is not None else {})


def run_worker(spec: WorkerSpec, channel: Channel, payload: Optional[bytes] = None) -> int:
    """Run one worker to completion; returns the process exit code. Without ``payload``, the train function
    comes as the channel's first message."""
    phase = "setup"
    try:
        # First, while this is the only thread: a SIGTERM is a notice (every later thread inherits the mask).
        preemption.arm(lambda when: channel.send(msg.PreemptNotice(spec.rank, when)))
        _apply_spec(spec)
        session = WorkerSession(spec, channel)
        session.on_progress = collectives.progressed  # a report restarts the quiet timer
        set_session(session)
        channel.send(msg.Hello(spec.rank, os.getpid(), socket.gethostname(), time.time()))
        torch = _setup_torch(spec)
        import cloudpickle

        phase = "loading the train function"
        if payload is None:
            message = channel.recv()
            assert isinstance(message, msg.Payload), message
            payload = message.data
        fn, config = cloudpickle.loads(payload)
        phase = "rendezvous"
        _rendezvous(spec, channel)
        phase = "train function"
        try:
            value = _call_user_function(fn, config)
        except SystemExit as exc:
            if exc.code in (None, 0):
                value = None
            else:
                raise
        phase = "uploading checkpoints"
        session.drain_uploads()  # ASYNC uploads still running, and the reports queued behind them
        phase = "returning the result"
        collectives.write("returned")
        from rafter._util.pickling import dumps_return_value

        channel.send(msg.Finished(spec.rank, dumps_return_value(value), time.time()))
        phase = "shutdown"
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        del torch
        return 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        _send_error(channel, spec.rank, exc, phase, exit_code=code)
        return code
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, then the process ends
        _send_error(channel, spec.rank, exc, phase)
        return 1


def _send_error(channel: Channel, rank: int, exc: BaseException, phase: str, exit_code: Optional[int] = None) -> None:
    collectives.write("raised")
    record = exception_record(exc, phase)
    record["exit_code"] = exit_code
    try:
        sys.stderr.write(record["traceback"])
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    try:
        channel.send(msg.Errored(rank, record))
    except OSError:
        pass
