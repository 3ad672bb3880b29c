"""get_dataset_shard and TorchTrainer(datasets=...) without Ray Data in play."""

import subprocess
import sys

import pytest

import rafter.train as train
from rafter.train import ScalingConfig
from rafter.train.torch import TorchTrainer


def asks_for_a_shard():
    try:
        train.get_dataset_shard("train")
    except KeyError as exc:
        return str(exc), "ray" in sys.modules
    return "no error", None


def test_get_dataset_shard_without_datasets_is_a_key_error(run_config):
    result = TorchTrainer(asks_for_a_shard, scaling_config=ScalingConfig(num_workers=2),
                          run_config=run_config(name="nods")).fit()
    message, imported_ray = result.return_value
    assert "TorchTrainer(datasets=...) has none" in message
    assert imported_ray is False  # asking for a shard with no datasets does not need Ray


def test_datasets_without_ray_installed_say_what_to_install():
    code = (
        "import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
        "from rafter.train.torch import TorchTrainer\n"
        "TorchTrainer(lambda: None, datasets={'train': object()})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "ImportError: TorchTrainer(datasets=...) takes Ray Data datasets, which need Ray" in proc.stderr
    assert "pip install 'rafter-train[data]'" in proc.stderr


def test_datasets_must_be_a_dict_of_names():
    with pytest.raises(TypeError, match=r"expected a dict of dataset names"):
        TorchTrainer(lambda: None, datasets=["train"])
