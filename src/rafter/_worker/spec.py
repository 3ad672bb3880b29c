"""What a backend tells one worker about its place in the run (picklable, backend-agnostic)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class WorkerSpec:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    attempt: int
    run_name: str
    run_path: str  # storage URI or local path of the run folder
    log_dir: str  # local folder for this worker's logs and stack dumps
    backend: str  # "gloo" | "nccl"
    timeout_s: float
    use_gpu: bool
    num_threads: int
    rdzv_host: str  # address rank 0 binds its store to; peers connect to it
    cwd: str
    sys_path: List[str]
    run_start_time: float
    latest_checkpoint: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    device_index: Optional[int] = None  # CUDA device ordinal within the visible devices
    storage_filesystem: Any = None  # RunConfig(storage_filesystem=...), pickled to the worker
    crash_at: Optional[dict] = None  # test-only fault injection (see rafter.testing)
    memory_limit: Optional[int] = None  # resources_per_worker["memory"]: watched on the rank's node (Ray)

    @property
    def stack_file(self) -> str:
        return f"{self.log_dir}/stacks_rank_{self.rank}.txt"
