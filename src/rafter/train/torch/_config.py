from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class TorchConfig:
    """How the process group is set up.

    Attributes:
        backend: "gloo" or "nccl"; None picks nccl with GPUs, gloo otherwise.
        timeout_s: timeout of collective operations, passed to ``init_process_group`` (Ray's default, 1800 s).
            rafter's hang detector (``RunConfig(hang_timeout_s=...)``) usually fires long before it.
        init_method: accepted for Ray compatibility; rafter always rendezvouses through its own store.
    """

    backend: Optional[str] = None
    timeout_s: float = 1800
    init_method: str = "env"

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in ("gloo", "nccl"):
            raise ValueError(f"TorchConfig(backend={self.backend!r}): expected 'gloo', 'nccl' or None.")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or self.timeout_s <= 0:
            raise ValueError(f"TorchConfig(timeout_s={self.timeout_s!r}): expected a number of seconds > 0.")

    def resolve_backend(self, use_gpu: bool) -> str:
        return self.backend or ("nccl" if use_gpu else "gloo")
