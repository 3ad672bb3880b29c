"""``TorchConfig`` (exported as ``rafter.train.torch.TorchConfig``), kept free of torch so that job files can
be checked without importing it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rafter.train._config import ScalingConfig
from rafter.train._validation import ConfigValueError, check_choice, is_number, warn_ignored

MAX_TIMEOUT_S = 365 * 24 * 3600  # torch turns the timeout into a C++ duration; a year is plenty and safe


@dataclass
class TorchConfig:
    """How the process group is set up.

    Attributes:
        backend: "gloo" or "nccl"; None picks nccl with GPUs, gloo otherwise.
        timeout_s: timeout of collective operations, passed to ``init_process_group`` (Ray's default, 1800 s).
            rafter's hang detector (``RunConfig(hang_timeout_s=...)``) usually fires long before it.
        init_method: "env" (Ray's default) or "tcp", accepted for Ray compatibility; rafter always
            rendezvouses through its own store ("tcp" warns that it is ignored).
    """

    backend: Optional[str] = None
    timeout_s: float = 1800
    init_method: str = "env"

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in ("gloo", "nccl"):
            raise ConfigValueError("TorchConfig", "backend", self.backend, "expected 'gloo', 'nccl' or None")
        if not is_number(self.timeout_s) or not 0 < self.timeout_s <= MAX_TIMEOUT_S:
            raise ConfigValueError("TorchConfig", "timeout_s", self.timeout_s,
                                   f"expected a number of seconds > 0 (and at most {MAX_TIMEOUT_S}, a year)", 1800)
        check_choice("TorchConfig", "init_method", self.init_method, ("env", "tcp"))
        if self.init_method == "tcp":
            warn_ignored("TorchConfig(init_method='tcp')", "rafter's workers always meet through its own store")

    def resolve_backend(self, use_gpu: bool) -> str:
        return self.backend or ("nccl" if use_gpu else "gloo")


def check_backend_fits(torch_config: Optional[TorchConfig], scaling: ScalingConfig) -> None:
    """NCCL needs GPUs: a worker group without them would fail in every worker at init_process_group."""
    if torch_config is not None and torch_config.backend == "nccl" and not scaling.use_gpu and scaling.num_workers:
        raise ConfigValueError(
            "TorchConfig", "backend", "nccl", "nccl runs only on GPUs, but the workers get none ({off}); set {on}, or "
            "use gloo", "gloo", refs={"off": ("ScalingConfig", "use_gpu", False), "on": ("ScalingConfig", "use_gpu", True)})
