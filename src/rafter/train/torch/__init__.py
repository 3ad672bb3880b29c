"""``rafter.train.torch``: the PyTorch trainer and the helpers a train function uses."""

from rafter.train.torch._config import TorchConfig
from rafter.train.torch._prepare import (
    enable_reproducibility,
    get_device,
    get_devices,
    prepare_data_loader,
    prepare_model,
)
from rafter.train.torch._trainer import TorchTrainer

__all__ = [
    "TorchConfig",
    "TorchTrainer",
    "enable_reproducibility",
    "get_device",
    "get_devices",
    "prepare_data_loader",
    "prepare_model",
]
