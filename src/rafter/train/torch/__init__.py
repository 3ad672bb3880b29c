"""``rafter.train.torch``: the PyTorch trainer and the helpers a train function uses."""

from rafter.train.torch._amp import autocast_dtype, choose_autocast_dtype
from rafter.train._torch_config import TorchConfig
from rafter.train.torch._prepare import (
    enable_reproducibility,
    get_device,
    get_devices,
    prepare_data_loader,
    prepare_model,
)
from rafter.train.torch._state import get_state_dict, load_checkpoint_file, load_state_dict
from rafter.train.torch._trainer import TorchTrainer

__all__ = [
    "TorchConfig",
    "TorchTrainer",
    "autocast_dtype",
    "choose_autocast_dtype",
    "enable_reproducibility",
    "get_device",
    "get_devices",
    "get_state_dict",
    "load_checkpoint_file",
    "load_state_dict",
    "prepare_data_loader",
    "prepare_model",
]
