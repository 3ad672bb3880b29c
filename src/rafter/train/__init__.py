"""rafter's public training API (the names and defaults of Ray Train 2.60's ``ray.train``).

``rafter.train.torch`` (TorchTrainer, prepare_model, ...) is loaded on first use, so
``import rafter.train as train`` alone is enough for ``train.torch.prepare_model(...)``.
"""

from rafter.train._callback import Callback, UserCallback
from rafter.train._checkpoint import Checkpoint
from rafter.train._config import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from rafter.train._context import TrainContext, get_checkpoint, get_context, get_dataset_shard, report
from rafter.train._data_config import DataConfig
from rafter.train._errors import ControllerError, PreemptionError, TrainingFailedError, WorkerGroupError
from rafter.train._reported import (
    CheckpointConsistencyMode,
    CheckpointUploadMode,
    ReportedCheckpoint,
    ReportedCheckpointStatus,
    get_all_reported_checkpoints,
)
from rafter.train._preemption import PreemptionInfo, get_preemption_info
from rafter.train._result import Result

TRAIN_DATASET_KEY = "train"

__all__ = [
    "Callback",
    "Checkpoint",
    "CheckpointConfig",
    "CheckpointConsistencyMode",
    "CheckpointUploadMode",
    "ControllerError",
    "DataConfig",
    "FailureConfig",
    "LoggingConfig",
    "PreemptionError",
    "PreemptionInfo",
    "ReportedCheckpoint",
    "ReportedCheckpointStatus",
    "Result",
    "RunConfig",
    "ScalingConfig",
    "TRAIN_DATASET_KEY",
    "TrainContext",
    "TrainingFailedError",
    "UserCallback",
    "WorkerGroupError",
    "collective",
    "get_all_reported_checkpoints",
    "get_checkpoint",
    "get_context",
    "get_dataset_shard",
    "get_preemption_info",
    "report",
    "torch",
]


def __getattr__(name):
    if name in ("collective", "torch"):
        import importlib

        return importlib.import_module(f"rafter.train.{name}")
    raise AttributeError(f"module 'rafter.train' has no attribute {name!r}")
