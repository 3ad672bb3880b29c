"""Trackers as callbacks: pass them in ``RunConfig(callbacks=[...])`` (or ``run.callbacks`` in a job file).

- ``metrics.jsonl`` in the run folder is always written (no callback needed).
- :class:`TensorBoardCallback` writes rank 0's numeric metrics as TensorBoard scalars.
- :class:`MLflowCallback` logs them to an MLflow run.
- :class:`WandbCallback` logs them to a Weights & Biases run (online, or offline into the run folder).

Callbacks run on the driver and see rank 0's reports only. Each imports its library when created,
so a missing one fails before training starts, with the ``pip install`` that fixes it.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from rafter.train._callback import Callback
from rafter.train._validation import check_optional_str, check_path

__all__ = ["Callback", "MLflowCallback", "TensorBoardCallback", "WandbCallback", "scalar_metrics"]


def scalar_metrics(metrics: Dict[str, Any], prefix: str = "") -> Iterator[Tuple[str, float]]:
    """The finite numbers in ``metrics``; nested dicts become ``outer/inner`` names. Other values are skipped."""
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from scalar_metrics(value, prefix=f"{name}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield name, float(value)


def _first_step(run_path: str) -> int:
    """The index of the report being handled, counting reports of earlier runs with this run folder.

    ``metrics.jsonl`` already holds the report when callbacks run (local storage); a resumed run
    continues its steps instead of writing over them.
    """
    path = os.path.join(run_path, "metrics.jsonl")
    try:
        with open(path, "rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


class _ScalarTracker(Callback):
    """What the trackers share: rank 0's numeric metrics, with the report's index in the run as the step."""

    _step: Optional[int] = None  # known at the first report (see _first_step)

    def after_report(self, *, metrics: Dict[str, Any], rank: int, run_path: str) -> None:
        if rank != 0:
            return
        if self._step is None:
            self._step = _first_step(run_path)
        self._log_scalars(list(scalar_metrics(metrics)), self._step, run_path)
        self._step += 1

    def _log_scalars(self, scalars: List[Tuple[str, float]], step: int, run_path: str) -> None:
        raise NotImplementedError


class TensorBoardCallback(_ScalarTracker):
    """Write each report's numeric metrics with ``torch.utils.tensorboard.SummaryWriter``.

    Args:
        logdir: where the event files go; default ``<run folder>/tensorboard``. View with
            ``tensorboard --logdir <that folder>``. The step is the report's index in the run.
    """

    def __init__(self, logdir: Optional[str] = None) -> None:
        self.logdir = None if logdir is None else check_path("TensorBoardCallback", "logdir", logdir, "tb_logs",
                                                             empty="name a folder, or leave it unset for the default")
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"TensorBoardCallback needs the tensorboard package, which can't be imported ({exc}). "
                f"Install it: pip install tensorboard"
            ) from None
        self._writer = None

    def _open(self, run_path: str):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            logdir = self.logdir or os.path.join(run_path, "tensorboard")
            self.logdir = logdir
            self._writer = SummaryWriter(log_dir=logdir)
        return self._writer

    def _log_scalars(self, scalars: List[Tuple[str, float]], step: int, run_path: str) -> None:
        writer = self._open(run_path)
        for name, value in scalars:
            writer.add_scalar(name, value, global_step=step)

    def on_end(self, *, result, run_path: str) -> None:
        if self._writer is not None:
            self._writer.close()  # stops its writer thread; a later fit() opens a new one
            self._writer, self._step = None, None


class MLflowCallback(_ScalarTracker):
    """Log each report's numeric metrics to an MLflow run (one MLflow run per rafter run).

    Args:
        tracking_uri: MLflow tracking URI; None uses MLflow's own default (``MLFLOW_TRACKING_URI``).
            An explicit file store (``file:///path/mlruns``) sets ``MLFLOW_ALLOW_FILE_STORE=true``
            (unless set), which MLflow 3 requires for that store.
        experiment_name: created if missing; default ``"rafter"``.

    The MLflow run is named after the rafter run, tagged with its folder (``rafter.run_path``) and
    latest checkpoint, and ended FINISHED or FAILED with the run. ``run_id`` is set once it exists.
    """

    def __init__(self, tracking_uri: Optional[str] = None, experiment_name: Optional[str] = None) -> None:
        check_optional_str("MLflowCallback", "tracking_uri", tracking_uri, "http://localhost:5000")
        check_optional_str("MLflowCallback", "experiment_name", experiment_name, "my_experiment")
        try:
            from mlflow.tracking import MlflowClient  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"MLflowCallback needs the mlflow package, which can't be imported ({exc}). "
                f"Install it: pip install mlflow   (or the lighter pip install mlflow-skinny)"
            ) from None
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name or "rafter"
        self.run_id: Optional[str] = None
        self._client = None

    def _start(self, run_path: str):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.tracking_uri and (self.tracking_uri.startswith("file:") or "://" not in self.tracking_uri):
                # An explicit file store: MLflow 3 refuses one unless this is set; asking for it is consent.
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            client = MlflowClient(tracking_uri=self.tracking_uri)
            experiment = client.get_experiment_by_name(self.experiment_name)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else client.create_experiment(self.experiment_name))
            run = client.create_run(
                experiment_id,
                run_name=os.path.basename(run_path.rstrip("/")),
                tags={"rafter.run_path": run_path},
            )
            self._client, self.run_id = client, run.info.run_id
        return self._client

    def on_attempt_start(self, *, attempt: int, num_workers: int, run_path: str) -> None:
        client = self._start(run_path)
        client.set_tag(self.run_id, "rafter.attempt", str(attempt))
        client.log_param(self.run_id, f"num_workers_attempt_{attempt}", num_workers)

    def _log_scalars(self, scalars: List[Tuple[str, float]], step: int, run_path: str) -> None:
        from mlflow.entities import Metric

        client = self._start(run_path)
        now = int(time.time() * 1000)
        batch = [Metric(key=_mlflow_key(name), value=value, timestamp=now, step=step) for name, value in scalars]
        if batch:
            client.log_batch(self.run_id, metrics=batch)

    def on_checkpoint(self, *, checkpoint, metrics: Dict[str, Any], run_path: str) -> None:
        self._start(run_path).set_tag(self.run_id, "rafter.latest_checkpoint", checkpoint.path)

    def on_failure(self, *, error, run_path: str) -> None:
        first = str(error).split("\n", 1)[0]
        self._start(run_path).set_tag(self.run_id, "rafter.last_failure", first[:5000])

    def on_end(self, *, result, run_path: str) -> None:
        if self._client is None:
            return
        self._client.set_terminated(self.run_id, status="FAILED" if result.error is not None else "FINISHED")
        self._client, self._step = None, None


def _mlflow_key(name: str) -> str:
    """MLflow allows letters, digits, ``_ - . space / :``; anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-. /:" else "_" for c in name)


class WandbCallback(_ScalarTracker):
    """Log each report's numeric metrics to a Weights & Biases run (one W&B run per rafter run).

    Args:
        project: default ``$WANDB_PROJECT``, else the run's name (``RunConfig(name=...)``).
        name: the W&B run's display name; default the run's name.
        group, entity, tags, notes, config: passed to ``wandb.init``.
        mode: ``"online"``, ``"offline"`` (files only, ``wandb sync`` them later) or ``"disabled"``;
            default W&B's own (``$WANDB_MODE``, else online).
        dir: where W&B writes its files (``<dir>/wandb/``); default the run folder when it is local.
        **init_kwargs: any other ``wandb.init`` argument.

    A resumed run (``fit()`` again with the same name and storage) continues the same W&B run and its
    steps: the W&B run id is kept in ``<dir>/wandb/rafter_run_id``. The step is the report's index in
    the run. The latest checkpoint, the attempt number and the last failure go to the run's summary
    (``rafter.latest_checkpoint``, ``rafter.attempt``, ``rafter.last_failure``). ``run_id`` is set once the
    run exists.
    """

    def __init__(self, project: Optional[str] = None, name: Optional[str] = None, group: Optional[str] = None,
                 entity: Optional[str] = None, mode: Optional[str] = None, dir: Optional[str] = None,
                 tags: Optional[List[str]] = None, notes: Optional[str] = None,
                 config: Optional[Dict[str, Any]] = None, **init_kwargs: Any) -> None:
        try:
            import wandb  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"WandbCallback needs the wandb package, which can't be imported ({exc}). "
                f"Install it: pip install wandb"
            ) from None
        if mode not in (None, "online", "offline", "disabled", "shared"):
            raise ValueError(f"WandbCallback(mode={mode!r}): expected 'online', 'offline' or 'disabled'.")
        self.project, self.name, self.group, self.entity = project, name, group, entity
        self.mode, self.dir = mode, (os.fspath(dir) if dir is not None else None)
        self.tags, self.notes, self.config = tags, notes, config
        self.init_kwargs = init_kwargs
        self.run_id: Optional[str] = None
        self._run = None

    def _start(self, run_path: str):
        if self._run is None:
            import wandb
            from rafter._storage import is_uri

            run_name = os.path.basename(run_path.rstrip("/"))
            files_dir = self.dir or (None if is_uri(run_path) else run_path)
            kwargs = dict(self.init_kwargs)
            kwargs.setdefault("reinit", "create_new")  # leaves a run the user's own code has open alone
            run_id = _wandb_run_id(files_dir)
            if run_id is not None:
                kwargs.setdefault("id", run_id)
                if self.mode != "offline":
                    kwargs.setdefault("resume", "allow")
            self._run = wandb.init(
                project=self.project or os.environ.get("WANDB_PROJECT") or run_name,
                name=self.name or run_name, group=self.group, entity=self.entity, mode=self.mode,
                dir=files_dir, tags=self.tags, notes=self.notes, config=self.config, **kwargs,
            )
            self.run_id = self._run.id
            _keep_wandb_run_id(files_dir, self.run_id)
            self._run.summary["rafter.run_path"] = run_path
        return self._run

    def on_attempt_start(self, *, attempt: int, num_workers: int, run_path: str) -> None:
        run = self._start(run_path)
        run.summary["rafter.attempt"] = attempt
        run.summary["rafter.num_workers"] = num_workers

    def _log_scalars(self, scalars: List[Tuple[str, float]], step: int, run_path: str) -> None:
        self._start(run_path).log(dict(scalars), step=step)

    def on_checkpoint(self, *, checkpoint, metrics: Dict[str, Any], run_path: str) -> None:
        self._start(run_path).summary["rafter.latest_checkpoint"] = checkpoint.path

    def on_failure(self, *, error, run_path: str) -> None:
        self._start(run_path).summary["rafter.last_failure"] = str(error).split("\n", 1)[0][:5000]

    def on_end(self, *, result, run_path: str) -> None:
        if self._run is None:
            return
        import wandb

        self._run.finish(exit_code=1 if result.error is not None else 0)
        self._run, self._step = None, None
        if wandb.run is None:  # no run of the user's own is open: stop W&B's helper process too
            wandb.teardown()


def _wandb_run_id(files_dir: Optional[str]) -> Optional[str]:
    if files_dir is None:
        return None
    try:
        with open(os.path.join(files_dir, "wandb", "rafter_run_id")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _keep_wandb_run_id(files_dir: Optional[str], run_id: str) -> None:
    if files_dir is None:
        return
    os.makedirs(os.path.join(files_dir, "wandb"), exist_ok=True)
    with open(os.path.join(files_dir, "wandb", "rafter_run_id"), "w") as f:
        f.write(run_id)
