"""What a backend tells one worker about its place in the run (picklable, backend-agnostic).

The controller fills in what is the same for every rank (a template); the backend's ``start_group``
fills in each rank's place (``rank`` .. ``device_index``) with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class WorkerSpec:
    world_size: int
    attempt: int
    run_name: str
    run_path: str  # storage URI or local path of the run folder
    log_dir: str  # local folder for this worker's logs and stack dumps
    backend: str  # "gloo" | "nccl"
    timeout_s: float
    use_gpu: bool
    num_threads: int
    cwd: str
    sys_path: List[str]
    run_start_time: float
    latest_checkpoint: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    storage_filesystem: Any = None  # RunConfig(storage_filesystem=...), pickled to the worker
    crash_at: Optional[dict] = None  # test-only fault injection (see rafter.testing)
    memory_limit: Optional[int] = None  # resources_per_worker["memory"]: watched on the rank's node (Ray)
    # -- the rank's place, filled in by the backend ------------------------------------------------
    rank: int = -1
    local_rank: int = -1
    local_world_size: int = 0
    node_rank: int = -1
    rdzv_host: str = ""  # address rank 0 binds its store to; peers connect to it
    device_index: Optional[int] = None  # CUDA device ordinal within the visible devices

    @property
    def stack_file(self) -> str:
        return f"{self.log_dir}/stacks_rank_{self.rank}.txt"
