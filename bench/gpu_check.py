"""GPU check: the quickstart and the Llama example on this machine's GPUs (NCCL, bf16 where supported).

    python bench/gpu_check.py            # exits 0 with a message where there is no GPU

With N GPUs (one worker per GPU):
1. examples/quickstart.py exactly as written except ``num_workers=N`` (it asks for 4), so use_gpu=True;
2. an NCCL sanity check: each worker is on cuda:<local rank>, the backend is nccl, DDP averages gradients;
3. examples/llama_finetune.py with DDP and with FSDP2, precision "auto": every GPU Ampere or newer must
   give bfloat16 (older ones float16 + GradScaler), and the loss must fall.
Prints a markdown table; exits 1 if any check failed. With one GPU, DDP is skipped by prepare_model (one
worker) but FSDP still shards (a 1-rank mesh), so mixed precision via mp_policy is exercised either way.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def nccl_check():
    import torch
    import torch.distributed as dist

    from rafter import train

    ctx = train.get_context()
    device = train.torch.get_device()
    model = train.torch.prepare_model(torch.nn.Linear(4, 1, bias=False))
    x = torch.full((2, 4), float(ctx.get_world_rank() + 1), device=device)
    model(x).sum().backward()
    grad = (model.module if hasattr(model, "module") else model).weight.grad
    world = ctx.get_world_size()
    expected = 2 * sum(range(1, world + 1)) / world  # DDP averages 2*(rank+1) over ranks
    return {
        "device": str(device), "local_rank": ctx.get_local_rank(), "backend": dist.get_backend(),
        "name": torch.cuda.get_device_name(device), "param_device": str(next(model.parameters()).device),
        "grad_ok": bool(torch.allclose(grad, torch.full_like(grad, expected))),
    }


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no GPU on this machine (torch.cuda.is_available() is False); nothing to check, skipped.")
        return 0
    n = torch.cuda.device_count()
    from rafter.train import RunConfig, ScalingConfig
    from rafter.train.torch import TorchTrainer

    rows = []

    def check(name, fn):
        t0 = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - report every check, then fail at the end
            ok, detail = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        rows.append((name, "ok" if ok else "FAILED", f"{time.perf_counter() - t0:.1f} s", detail))
        print(f"[gpu_check] {name}: {'ok' if ok else 'FAILED'} - {detail}", flush=True)

    storage = tempfile.mkdtemp(prefix="rafter-gpu-check-")

    def quickstart():
        with open(os.path.join(EXAMPLES, "quickstart.py")) as f:
            source = f.read()
        assert "num_workers=4" in source, "examples/quickstart.py no longer says num_workers=4; update gpu_check"
        source = source.replace("num_workers=4", f"num_workers={n}")
        env = dict(os.environ, HOME=storage)  # the quickstart's default storage_path is ~/rafter_results
        proc = subprocess.run([sys.executable, "-c", source], cwd=EXAMPLES, env=env, capture_output=True,
                              text=True, timeout=300)
        last = [line for line in proc.stdout.splitlines() if "Training finished" in line]
        if proc.returncode != 0 or not last:
            return False, f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-600:]}"
        return True, f"{n} worker(s), use_gpu=True: {last[-1]}"

    def nccl():
        result = TorchTrainer(nccl_check, scaling_config=ScalingConfig(num_workers=n, use_gpu=True),
                              run_config=RunConfig(name="nccl", storage_path=storage)).fit()
        v = result.return_value  # rank 0's
        ok = (v["backend"] == "nccl" and v["device"] == "cuda:0" and v["param_device"] == "cuda:0"
              and v["grad_ok"])
        return ok, f"rank 0 on {v['device']} ({v['name']}), backend {v['backend']}, DDP gradients averaged: {v['grad_ok']}"

    def llama(fsdp: bool):
        def run():
            sys.path.insert(0, EXAMPLES)
            import llama_finetune

            result = llama_finetune.run({"steps": 60, "report_every": 20, "checkpoint_every": 60, "fsdp": fsdp},
                                        num_workers=n, storage_path=storage, name=f"llama_{'fsdp' if fsdp else 'ddp'}")
            names = {torch.cuda.get_device_name(i) for i in range(n)}
            want = "bfloat16" if all(torch.cuda.get_device_capability(i) >= (8, 0) for i in range(n)) else "float16"
            first, last = result.metrics_history[0], result.metrics_history[-1]
            ok = last["precision"] == want and math.isfinite(last["loss"]) and last["loss"] < first["loss"]
            return ok, (f"{n} x {', '.join(sorted(names))}: precision {last['precision']} (expected {want}), "
                        f"loss {first['loss']:.3f} -> {last['loss']:.3f}, {last['tokens_per_s']:.0f} tokens/s")
        return run

    check("quickstart (use_gpu=True)", quickstart)
    check("NCCL + DDP gradients", nccl)
    check("llama DDP, precision auto", llama(False))
    check("llama FSDP2, precision auto", llama(True))

    print("\n| check | result | time | detail |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all(r[1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
