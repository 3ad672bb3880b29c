"""``rafter run job.yaml``: validate everything, then train with live progress and a closing summary.

Exit codes: 0 the run finished, 1 it failed, 2 the job (file, flags, resources) is wrong, 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Optional

from rafter._cli.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED, ConfigError
from rafter._cli.jobfile import Job, load_job


def cluster_kind(job: Job) -> str:
    """``local`` or ``ray``, as ``fit()`` will resolve the job's ``cluster``."""
    from rafter._backends import resolve_cluster

    return resolve_cluster(job.values["cluster"])


def check_local_resources(job: Job) -> Optional[int]:
    """Run the local backend's own feasibility check now, as a job error; returns torch threads per worker."""
    from rafter._backends.local.backend import LocalBackend
    from rafter._cli.translate import translate

    rafter_logger = logging.getLogger("rafter")
    was_disabled, rafter_logger.disabled = rafter_logger.disabled, True  # fit() warns once, later
    try:
        return LocalBackend().check_resources(job.scaling)
    except ValueError as exc:
        error = translate(exc, "scaling", job.values, job.origin)
        s = job.scaling
        if getattr(exc, "field", None) == "num_workers":
            path, fix = "scaling.num_workers", (
                "ask for the GPUs this machine has (rafter check shows them), use_gpu: false, or run on a Ray "
                "cluster: cluster: ray")
        elif s.custom_resources:
            path, fix = "scaling.resources_per_worker", (
                f"remove {', '.join(sorted(s.custom_resources))} from scaling.resources_per_worker, or run on a "
                f"Ray cluster: cluster: ray")
        else:
            path, fix = "scaling.resources_per_worker", "ask for less memory per worker: resources_per_worker.memory"
        raise ConfigError(error.problem, source=job.origin(path), path=path, value=job.get(path), has_value=True,
                          fix=fix) from None
    finally:
        rafter_logger.disabled = was_disabled


def check_storage(job: Job) -> None:
    """The storage check fit() runs first, now, so that its error is said in job terms before anything starts."""
    from rafter._controller.storage_check import check_storage as check
    from rafter._cli.translate import translate
    from rafter.train._config import default_storage_path
    from rafter.train._validation import ConfigValueError

    try:
        check(job.configs["run_kwargs"].get("storage_path") or default_storage_path())
    except ConfigValueError as exc:
        raise translate(exc, "run", job.values, job.origin) from None


def _output_streams(args, stack: contextlib.ExitStack):
    """Where people-facing lines go (None: nowhere); stdout is redirected for the run as the mode needs."""
    if args.json:
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))  # stdout carries only the JSON
        return sys.stderr
    if args.quiet:
        stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        return None
    return sys.stdout


def run_command(args) -> int:
    from rafter._cli.printconfig import render

    try:
        job = load_job(args.job, args.set, load_train=not args.print_config)
    except ConfigError as exc:
        print(f"rafter: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.print_config:
        sys.stdout.write(render(job))
        return EXIT_OK
    try:
        if cluster_kind(job) == "local":
            check_local_resources(job)
        check_storage(job)
    except ConfigError as exc:
        print(f"rafter: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return _fit(job, args)


def _fit(job: Job, args) -> int:
    from rafter._cli import schema
    from rafter._cli.progress import ProgressCallback
    from rafter._cli.translate import translate
    from rafter._cli.summary import describe, print_json, result_json
    from rafter._controller.run_state import IncompatibleRunError
    from rafter._storage import Storage
    from rafter._util.pickling import SerializationError
    from rafter.train import Result, TrainingFailedError
    from rafter.train._validation import ConfigValueError

    stack = contextlib.ExitStack()
    real_stdout = sys.stdout
    human = _output_streams(args, stack)
    progress = None
    if human is not None:
        live = human.isatty() and not args.no_live
        progress = ProgressCallback(human, live=live, every_s=args.progress_every)
    run_config = job.run_config([progress] if progress else [])
    run_path = Storage(run_config.storage_path).join(run_config.name)
    start = time.time()
    error: Optional[BaseException] = None
    try:
        with stack:
            try:
                result = job.trainer(run_config=run_config).fit()
            finally:
                if progress is not None:
                    progress.close()  # Ctrl-C or an error must not leave a live display (and a hidden cursor)
    except TrainingFailedError as exc:
        error = exc
        try:
            result = Result.from_path(run_path)
        except (FileNotFoundError, OSError, ValueError):
            result = Result(path=run_path, error=exc)
    except (IncompatibleRunError, SerializationError) as exc:
        fix = ("--set run.name=<a new name>, or delete that folder" if isinstance(exc, IncompatibleRunError)
               else "pass only plain data in train_loop_config")
        path = "run.name" if isinstance(exc, IncompatibleRunError) else "train_loop_config"
        err = ConfigError(str(exc), source=job.origin(path), path=path, fix=fix)
        print(f"rafter: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigValueError as exc:  # raised by fit() before any worker starts (storage, resources)
        section = schema.section_of_class(exc.config) or "run"
        print(f"rafter: {translate(exc, section, job.values, job.origin)}", file=sys.stderr)
        return EXIT_CONFIG
    except (ValueError, ConnectionError) as exc:  # raised by fit() before any worker starts (cluster checks)
        print(f"rafter: the run could not start: {exc}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, ValueError) else EXIT_FAILED
    except KeyboardInterrupt:
        print(f"\nrafter: interrupted; every worker was stopped. What was saved is in {run_path}", file=sys.stderr)
        return 130
    elapsed = time.time() - start
    preempted = getattr(error, "kind", None) == "preempted"
    status = "preempted" if preempted else "failed" if error is not None else "finished"
    if error is not None:
        print(f"rafter: the run {'was preempted' if preempted else 'failed'}.\n{error}", file=sys.stderr)
    if args.json:
        print_json(result_json(result, status=status, error=error, elapsed_s=elapsed), real_stdout)
    if human is not None:
        human.write(describe(result, status=status, error=error, elapsed_s=elapsed) + "\n")
        human.write(f"  see again:    rafter results {result.path}\n")
        human.flush()
    if preempted:
        return EXIT_PREEMPTED
    return EXIT_FAILED if error is not None else EXIT_OK
