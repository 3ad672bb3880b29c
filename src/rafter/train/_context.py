"""The functions a train function calls: ``report``, ``get_context``, ``get_checkpoint``.

They work only inside a worker; on the driver they raise an error that says where to call them.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Dict, Optional

from rafter._worker import alone
from rafter._worker.session import require_session
from rafter.train._validation import check_report_args

_PLAIN = (int, float, str, bool, type(None))


class TrainContext:
    """Where this worker sits in the run. Obtain it with ``rafter.train.get_context()``."""

    def __init__(self, session) -> None:
        self._session = session
        self._spec = session.spec

    def get_world_size(self) -> int:
        return self._spec.world_size

    def get_world_rank(self) -> int:
        return self._spec.rank

    def get_local_rank(self) -> int:
        return self._spec.local_rank

    def get_local_world_size(self) -> int:
        return self._spec.local_world_size

    def get_node_rank(self) -> int:
        return self._spec.node_rank

    def get_experiment_name(self) -> str:
        return self._spec.run_name

    def get_attempt(self) -> int:
        """1 for the first attempt, 2 after the first restart, and so on."""
        return self._spec.attempt

    def get_storage_path(self) -> str:
        return self._spec.run_path

    def get_storage(self) -> "StorageContext":
        """Where this run's files live (Ray's DeveloperAPI ``StorageContext``)."""
        spec = self._spec
        return StorageContext(spec.run_path.rstrip("/").rpartition("/")[0] or "/", spec.run_name,
                              spec.storage_filesystem)

    def __repr__(self) -> str:
        s = self._spec
        return (f"TrainContext(world_rank={s.rank}, world_size={s.world_size}, local_rank={s.local_rank}, "
                f"node_rank={s.node_rank}, attempt={s.attempt}, experiment_name={s.run_name!r})")


class StorageContext:
    """Ray Train's ``StorageContext`` attributes for this run (``get_context().get_storage()``).

    ``storage_filesystem`` is ``RunConfig(storage_filesystem=...)`` when given, else pyarrow's filesystem for
    the storage path (fsspec's without pyarrow); ``*_fs_path`` are paths on it.
    """

    def __init__(self, storage_path: str, experiment_dir_name: str, storage_filesystem: Any = None) -> None:
        from rafter._storage import filesystem_and_path

        self.custom_fs_provided = storage_filesystem is not None
        self.storage_path = storage_path
        self.experiment_dir_name = experiment_dir_name
        self.storage_filesystem, self.storage_fs_path = filesystem_and_path(storage_path, storage_filesystem)
        self.storage_fs_path = self.storage_fs_path.rstrip("/") or "/"

    @property
    def experiment_fs_path(self) -> str:
        return f"{self.storage_fs_path.rstrip('/')}/{self.experiment_dir_name}"

    def build_checkpoint_path_from_name(self, checkpoint_dir_name: str) -> str:
        return f"{self.experiment_fs_path}/{checkpoint_dir_name}"

    def __repr__(self) -> str:
        return (f"StorageContext(storage_path={self.storage_path!r}, experiment_dir_name={self.experiment_dir_name!r}, "
                f"storage_filesystem={self.storage_filesystem!r})")


def get_context() -> TrainContext:
    return TrainContext(require_session("get_context"))


def _convert_metric(key: str, value: Any) -> Any:
    kind = type(value)
    module = kind.__module__
    if module == "torch" or module.startswith("torch."):
        import torch

        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(
                    f"rafter.train.report(): metric {key!r} is a tensor of shape {tuple(value.shape)}; metrics "
                    f"must be numbers. Report a scalar, e.g. {{{key!r}: loss.item()}}, or a list via .tolist()."
                )
            return value.item()
    if module == "numpy" and hasattr(value, "item") and getattr(value, "size", 2) == 1:
        return value.item()
    try:
        pickle.dumps(value)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(
            f"rafter.train.report(): metric {key!r} has a value of type {kind.__module__}.{kind.__qualname__} "
            f"that can't be pickled ({exc}). Report plain numbers, strings, lists or dicts."
        ) from None
    return value


def clean_metrics(metrics: Any) -> Dict[str, Any]:
    if not isinstance(metrics, dict):
        raise TypeError(f"rafter.train.report(metrics): expected a dict of metrics, got {type(metrics).__name__}.")
    out = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"rafter.train.report(): metric names must be str, got {key!r}.")
        out[key] = value if type(value) in _PLAIN else _convert_metric(key, value)
    return out


def report(
    metrics: Dict[str, Any],
    checkpoint: Optional[Any] = None,
    checkpoint_dir_name: Optional[str] = None,
    checkpoint_upload_mode=None,
    delete_local_checkpoint_after_upload: Optional[bool] = None,
    checkpoint_upload_fn: Optional[Callable] = None,
    validation: Any = False,
) -> None:
    """Send metrics (and optionally a checkpoint) to the driver. Cheap and non-blocking without a checkpoint.

    Any rank may report; ``Result.metrics`` holds rank 0's latest. With a checkpoint, this rank's files are
    written to storage and the checkpoint becomes visible once every rank that passed files has written them.

    ``checkpoint_upload_mode``: ``CheckpointUploadMode.SYNC`` (default), ``ASYNC`` (the copy runs in the
    background and ``report()`` returns at once) or ``NO_UPLOAD`` (the folder is already in the run folder).
    ``delete_local_checkpoint_after_upload`` (default: True for ASYNC only) deletes the local folder once
    copied. ``checkpoint_upload_fn(checkpoint, dir_name) -> Checkpoint`` uploads it yourself (into the run
    folder, e.g. ``get_context().get_storage().experiment_fs_path``).
    """
    from rafter._worker import uploads
    from rafter.train._reported import CheckpointUploadMode

    check_report_args(checkpoint_dir_name)
    mode = CheckpointUploadMode.SYNC if checkpoint_upload_mode is None else checkpoint_upload_mode
    if not isinstance(mode, CheckpointUploadMode):
        raise TypeError(f"rafter.train.report(checkpoint_upload_mode={checkpoint_upload_mode!r}): expected a "
                        f"CheckpointUploadMode, e.g. CheckpointUploadMode.ASYNC.")
    if validation:
        raise ValueError("rafter.train.report(validation=...): rafter has no separate validation step; validate in "
                         "the train function and report the metrics with the checkpoint.")
    session = require_session("report")
    clean = clean_metrics(metrics)
    index = session.report_index
    session.report_index = index + 1
    alone.notice_report(session, index, checkpoint is not None)
    uploads.report(session, index, clean, checkpoint, checkpoint_dir_name, mode,
                   delete_local_checkpoint_after_upload, checkpoint_upload_fn)
    if session.spec.crash_at is not None:
        from rafter._worker import faults

        faults.hit("report", report=index)


def get_checkpoint():
    """The latest committed checkpoint of this run (after a restart or resume), else None."""
    session = require_session("get_checkpoint")
    path = session.spec.latest_checkpoint
    if path is None:
        return None
    from rafter.train._checkpoint import Checkpoint

    return Checkpoint(path, filesystem=session.spec.storage_filesystem)


def get_dataset_shard(dataset_name: Optional[str] = None):
    """This worker's shard of ``TorchTrainer(datasets={dataset_name: ...})``: a Ray Data ``DataIterator``
    (``iter_torch_batches()``, ``iter_batches()``, ``iter_rows()``). Split datasets give each rank a part of
    the data per epoch (``streaming_split``); the others give every rank all of it."""
    session = require_session("get_dataset_shard")
    if session.dataset_shards is None:
        from rafter._worker import messages as msg

        reply = session.request(msg.DatasetRequest(session.spec.rank))
        assert isinstance(reply, msg.DatasetsDone), reply
        address, blob = reply.address, reply.shards
        if reply.error:
            raise RuntimeError(f"rafter.train.get_dataset_shard({dataset_name!r}): {reply.error}")
        import cloudpickle

        if address is not None:
            import ray

            if not ray.is_initialized():  # the local backend's workers join the driver's Ray instance
                ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        session.dataset_shards = cloudpickle.loads(blob) if isinstance(blob, bytes) else blob
    shards = session.dataset_shards
    if dataset_name not in shards:
        given = ", ".join(repr(n) for n in sorted(shards)) or "none"
        raise KeyError(
            f"rafter.train.get_dataset_shard({dataset_name!r}): no dataset of that name was passed to the "
            f"trainer (TorchTrainer(datasets=...) has {given}). Pass it, e.g. "
            f"TorchTrainer(..., datasets={{{(dataset_name or 'train')!r}: ray.data.from_items(rows)}})."
        )
    return shards[dataset_name]

