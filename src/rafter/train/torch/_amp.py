"""Mixed precision that every rank supports, even when the ranks have different GPU generations.

The rule (:func:`choose_autocast_dtype`), applied to every rank's device capabilities:

* every rank on a GPU with native bfloat16 (NVIDIA Ampere / compute capability 8.0 and newer, recent
  AMD): ``(torch.bfloat16, False)`` — bf16 has fp32's range, so no loss scaling is needed;
* any rank on an older GPU (V100, T4, ...): ``(torch.float16, True)`` — fp16 everywhere plus a
  ``GradScaler``: the ranks of one data-parallel run must compute in the same precision (their gradients
  are averaged), and older GPUs have no bf16 units;
* any rank on CPU: ``(None, False)`` — full fp32. On most CPUs bf16 matmuls are not faster (no AMX) and
  CPU runs are for development, where exact fp32 numerics help more. Use
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` yourself if your CPUs have AMX.

Use the result as ``torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)`` and
``torch.amp.GradScaler(device.type, enabled=use_grad_scaler)``, or for FSDP as
``MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch


def device_capabilities(device: torch.device) -> Dict[str, Any]:
    """What this process's ``device`` offers: ``{"name", "device_type", "bf16"}``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(index)
        if torch.version.hip:
            bf16 = True  # every ROCm GPU torch supports (MI100 and newer) has bf16 units
        else:
            bf16 = torch.cuda.get_device_capability(index) >= (8, 0)
        return {"name": name, "device_type": "cuda", "bf16": bf16}
    return {"name": _cpu_name(), "device_type": device.type, "bf16": False}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


def choose_autocast_dtype(capabilities: List[Dict[str, Any]]) -> Tuple[Optional[torch.dtype], bool]:
    """``(autocast dtype or None, use_grad_scaler)`` that every rank in ``capabilities`` supports.

    ``capabilities[i]`` describes rank i: ``{"name": "A100", "bf16": True}`` with an optional
    ``"device_type"`` (``"cuda"`` by default, ``"cpu"`` for a CPU rank). See the module docstring for
    the rule; e.g. ``[{"name": "A100", "bf16": True}, {"name": "V100", "bf16": False}]`` gives
    ``(torch.float16, True)``.
    """
    if not capabilities:
        raise ValueError("choose_autocast_dtype([]): expected one capabilities dict per rank, got none.")
    for rank, cap in enumerate(capabilities):
        if not isinstance(cap, dict) or "bf16" not in cap:
            raise ValueError(
                f"choose_autocast_dtype(): rank {rank}'s capabilities {cap!r} lack the 'bf16' key; expected "
                f"e.g. {{'name': 'A100', 'bf16': True}}."
            )
    if any(cap.get("device_type", "cuda") == "cpu" for cap in capabilities):
        return None, False
    if all(cap["bf16"] for cap in capabilities):
        return torch.bfloat16, False
    return torch.float16, True


def describe_choice(capabilities: List[Dict[str, Any]], choice: Tuple[Optional[torch.dtype], bool]) -> List[str]:
    """One line per rank, then the decision and why (what :func:`autocast_dtype` prints on rank 0)."""
    lines = [
        f"rank {rank}: {cap.get('name', '?')} ({cap.get('device_type', 'cuda')}, "
        f"bf16 {'yes' if cap['bf16'] else 'no'})"
        for rank, cap in enumerate(capabilities)
    ]
    dtype, scaler = choice
    if dtype is None:
        cpu = [r for r, c in enumerate(capabilities) if c.get("device_type", "cuda") == "cpu"]
        lines.append(f"mixed precision: off (fp32), because rank(s) {', '.join(map(str, cpu))} run on CPU")
    elif dtype is torch.bfloat16:
        lines.append("mixed precision: bfloat16 (every rank supports it), no GradScaler")
    else:
        old = [f"{r} ({c.get('name', '?')})" for r, c in enumerate(capabilities) if not c["bf16"]]
        lines.append(f"mixed precision: float16 with GradScaler, because rank(s) {', '.join(old)} lack bfloat16")
    return lines


def autocast_dtype(device: Optional[torch.device] = None) -> Tuple[Optional[torch.dtype], bool]:
    """Pick the autocast dtype every rank supports; collective (call it on every rank, same point).

    Gathers each rank's device capabilities (``dist.all_gather_object``), applies
    :func:`choose_autocast_dtype`, prints one line per rank (``rank N: <device name> ...``) and the decision
    on rank 0, and returns ``(dtype or None, use_grad_scaler)`` — the same on every rank.
    """
    import torch.distributed as dist

    if device is None:
        from rafter.train.torch._prepare import get_device

        device = get_device()
    mine = device_capabilities(device)
    if dist.is_available() and dist.is_initialized():
        everyone: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        rank = dist.get_rank()
    else:
        everyone, rank = [mine], 0
    choice = choose_autocast_dtype(everyone)
    if rank == 0:
        print("\n".join(describe_choice(everyone, choice)), flush=True)
    return choice
