"""The public names, frozen. Adding or removing one is an API change: update EXPORTED in the same commit."""

import importlib

import pytest

EXPORTED = {
    "rafter": ["__version__", "train"],
    "rafter.train": [
        "Callback", "Checkpoint", "CheckpointConfig", "CheckpointConsistencyMode", "CheckpointUploadMode",
        "ControllerError", "DataConfig", "FailureConfig", "LoggingConfig", "PreemptionError", "PreemptionInfo",
        "ReportedCheckpoint", "ReportedCheckpointStatus", "Result", "RunConfig", "ScalingConfig", "TRAIN_DATASET_KEY",
        "TrainContext", "TrainingFailedError", "UserCallback", "WorkerGroupError", "collective",
        "get_all_reported_checkpoints", "get_checkpoint", "get_context", "get_dataset_shard", "get_preemption_info",
        "report", "torch",
    ],
    "rafter.train.torch": [
        "TorchConfig", "TorchTrainer", "autocast_dtype", "choose_autocast_dtype", "enable_reproducibility",
        "get_device", "get_devices", "get_state_dict", "load_checkpoint_file", "load_state_dict",
        "prepare_data_loader", "prepare_model",
    ],
    "rafter.train.callbacks": ["Callback", "MLflowCallback", "TensorBoardCallback", "WandbCallback", "scalar_metrics"],
}


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_names_are_the_frozen_list_and_all_resolve(name):
    module = importlib.import_module(name)
    assert sorted(module.__all__) == EXPORTED[name]
    assert list(module.__all__) == sorted(module.__all__), "keep __all__ sorted (merges stay easy)"
    missing = [member for member in module.__all__ if getattr(module, member, None) is None]
    assert missing == []


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_every_public_definition_is_exported(name):
    """A class or function defined in the module without a leading underscore is public: export it or hide it."""
    module = importlib.import_module(name)
    unlisted = [member for member, value in vars(module).items()
                if not member.startswith("_") and getattr(value, "__module__", None) == name
                and member not in module.__all__]
    assert unlisted == []
