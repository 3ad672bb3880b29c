"""Causal-LM fine-tuning of a Llama-architecture model with rafter: DDP or FSDP, mixed precision, checkpoints.

    python examples/llama_finetune.py                 # 2 workers, DDP, 300 steps (~20 s on 2 CPU cores)
    python examples/llama_finetune.py --fsdp          # the same model sharded with FSDP2
    python examples/llama_finetune.py --steps 400     # run again: resumes from the last checkpoint

Nothing is downloaded. The model is a *small, randomly initialised* Llama (transformers'
``LlamaForCausalLM``); the corpus is the English documentation that ships inside Python (docstrings of
standard-library modules); the tokenizer is byte-level (every byte is a token), built in a few lines.

With a real checkpoint the training function is unchanged; only the three "swap in" lines differ:

    tokenizer = AutoTokenizer.from_pretrained("meta-llama/Llama-3.2-1B")
    model = AutoModelForCausalLM.from_pretrained("meta-llama/Llama-3.2-1B", torch_dtype=torch.float32)
    # and your own dataset instead of stdlib_corpus()

(load the pretrained weights *before* prepare_model, on every rank, as here.)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import tempfile
import time

import torch
from torch.utils.data import DataLoader, Dataset

from rafter import train
from rafter.train import Checkpoint, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer

CORPUS_MODULES = (
    "textwrap", "string", "json", "collections", "itertools", "functools", "os", "pathlib", "random",
    "statistics", "fractions", "decimal", "datetime", "calendar", "heapq", "bisect", "argparse", "logging",
    "subprocess", "shutil", "tempfile", "csv", "difflib", "inspect", "typing", "dataclasses", "enum",
    "contextlib", "abc", "io",
)


# -- data: a corpus that ships with Python, and a byte-level tokenizer ------------------------------
def stdlib_corpus(modules=CORPUS_MODULES) -> str:
    """About 200 kB of English: the docstrings of some standard-library modules and what they define."""
    parts = []
    for name in modules:
        module = importlib.import_module(name)
        for obj in [module] + [getattr(module, a) for a in sorted(dir(module)) if not a.startswith("_")]:
            if obj is module or getattr(obj, "__module__", None) == name:
                doc = inspect.getdoc(obj)
                if doc:
                    parts.append(doc)
    return "\n\n".join(dict.fromkeys(parts))  # without duplicates, in a stable order


class ByteTokenizer:
    """Every UTF-8 byte is a token (0-255), plus BOS and EOS. No vocabulary file, nothing to download."""

    bos_token_id, eos_token_id = 256, 257
    vocab_size = 258

    def encode(self, text: str) -> list:
        return [self.bos_token_id] + list(text.encode("utf-8")) + [self.eos_token_id]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


class TokenBlocks(Dataset):
    """The token stream cut into non-overlapping blocks of ``seq_len`` tokens (inputs are the labels:
    ``LlamaForCausalLM`` shifts them by one internally)."""

    def __init__(self, ids: torch.Tensor, seq_len: int) -> None:
        self.ids, self.seq_len = ids, seq_len

    def __len__(self) -> int:
        return len(self.ids) // self.seq_len

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ids[i * self.seq_len:(i + 1) * self.seq_len]


# -- model --------------------------------------------------------------------------------------------
def build_model(vocab_size: int, hidden: int = 64, layers: int = 2, heads: int = 4, seq_len: int = 128):
    """A small Llama (random init). A real one: ``AutoModelForCausalLM.from_pretrained(name)``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=seq_len, tie_word_embeddings=False,
        bos_token_id=ByteTokenizer.bos_token_id, eos_token_id=ByteTokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


DEFAULTS = {
    "steps": 300, "batch_size": 8, "seq_len": 128, "lr": 3e-3, "hidden": 64, "layers": 2, "heads": 4,
    "fsdp": False, "precision": "auto", "report_every": 25, "checkpoint_every": 100, "seed": 0,
}


# -- the training function every worker runs ----------------------------------------------------------
def train_func(config: dict) -> None:
    from rafter.train.torch import (
        autocast_dtype, get_device, get_state_dict, load_checkpoint_file, load_state_dict,
        prepare_data_loader, prepare_model,
    )

    cfg = {**DEFAULTS, **config}
    ctx = train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    torch.manual_seed(cfg["seed"])  # the same initial weights on every rank

    tokenizer = ByteTokenizer()
    ids = torch.tensor(tokenizer.encode(stdlib_corpus()), dtype=torch.long)
    loader = DataLoader(TokenBlocks(ids, cfg["seq_len"]), batch_size=cfg["batch_size"], shuffle=True,
                        drop_last=True)
    loader = prepare_data_loader(loader)  # each rank gets its own shard of the blocks

    # Mixed precision every rank supports: bf16 on Ampere+ GPUs, fp16 + GradScaler if any rank is older,
    # fp32 on CPU. Prints one line per rank with its device, then the decision.
    dtype, use_scaler = autocast_dtype()
    if cfg["precision"] != "auto":  # an explicit choice wins (e.g. bf16 on a CPU with AMX)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[cfg["precision"]]
        use_scaler = dtype is torch.float16  # fp16 gradients underflow without loss scaling
        if rank == 0:
            print(f"precision={cfg['precision']!r} given: using {dtype or 'fp32'}")

    model = build_model(tokenizer.vocab_size, cfg["hidden"], cfg["layers"], cfg["heads"], cfg["seq_len"])
    model_config = model.config  # DDP hides it behind .module; keep it for the checkpoints
    if cfg["fsdp"]:
        # FSDP2: each decoder layer is its own shard unit; with mixed precision the parameters are
        # all-gathered in `dtype`, gradients reduced in fp32 and the sharded master weights stay fp32.
        from torch.distributed.fsdp import MixedPrecisionPolicy

        kwargs = {"mp_policy": MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)} if dtype else {}
        model = prepare_model(model, parallel_strategy="fsdp", parallel_strategy_kwargs=kwargs)
        autocast = contextlib.nullcontext()
    else:
        model = prepare_model(model)  # DDP
        autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.01)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    # Resume: rank 0 reads the file, load_state_dict broadcasts it (and each FSDP rank keeps its shard).
    step = 0
    checkpoint = train.get_checkpoint()
    if checkpoint:
        state = {}
        if rank == 0:
            with checkpoint.as_directory() as folder:
                state = load_checkpoint_file(os.path.join(folder, "state.pt"))
        load_state_dict(model, state, optimizer)
        step = checkpoint.get_metadata()["step"]  # small facts: in the metadata, readable by every rank
        if rank == 0:
            print(f"resumed from {checkpoint.path} at step {step}")

    model.train()
    epoch = step // len(loader)  # after a resume: carry on with the next epoch's shuffle order
    tokens, window_start = 0, time.perf_counter()
    while step < cfg["steps"]:
        if hasattr(loader.sampler, "set_epoch"):  # a DistributedSampler: a new shuffle each epoch
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            batch = batch.to(device)
            with autocast:
                loss = model(input_ids=batch, labels=batch).loss
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            tokens += batch.numel() * world
            last = step == cfg["steps"]
            if step % cfg["report_every"] == 0 or last:
                elapsed = time.perf_counter() - window_start
                metrics = {"step": step, "epoch": epoch, "loss": loss.item(), "tokens_per_s": tokens / elapsed,
                           "precision": str(dtype).replace("torch.", "") if dtype else "float32"}
                if step % cfg["checkpoint_every"] == 0 or last:
                    state = get_state_dict(model, optimizer)  # collective: every rank calls it
                    with tempfile.TemporaryDirectory() as folder:  # report() copies it into the run's storage
                        ckpt = _save(folder, state, step, model_config) if rank == 0 else None
                        train.report(metrics, checkpoint=ckpt)
                else:
                    train.report(metrics)
                tokens, window_start = 0, time.perf_counter()
            if last:
                break
        epoch += 1


def _save(folder: str, state: dict, step: int, model_config) -> Checkpoint:
    torch.save(state, os.path.join(folder, "state.pt"))
    model_config.to_json_file(os.path.join(folder, "config.json"))  # what from_pretrained would read
    checkpoint = Checkpoint.from_directory(folder)
    checkpoint.set_metadata({"step": step})
    return checkpoint


# -- driver side -------------------------------------------------------------------------------------
def run(config=None, num_workers=2, storage_path=None, name="llama_finetune"):
    trainer = TorchTrainer(
        train_func,
        train_loop_config={**DEFAULTS, **(config or {})},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=torch.cuda.is_available()),
        run_config=RunConfig(name=name, storage_path=storage_path),
    )
    return trainer.fit()


def sample(result, prompt: str = "Return the ", max_new_tokens: int = 40) -> str:
    """Greedy text from the run's last checkpoint, loaded into a plain (unwrapped) model on this process."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rafter.train.torch import load_checkpoint_file

    with result.checkpoint.as_directory() as folder:
        state = load_checkpoint_file(os.path.join(folder, "state.pt"))
        model = LlamaForCausalLM(LlamaConfig.from_json_file(os.path.join(folder, "config.json")))
    model.load_state_dict(state["model"])  # a plain state dict, whether trained with DDP or FSDP
    return greedy_text(model, prompt, max_new_tokens)


def greedy_text(model, prompt: str, max_new_tokens: int) -> str:
    """The model's greedy continuation of ``prompt``, with the byte-level tokenizer."""
    model.eval()
    tokenizer = ByteTokenizer()
    ids = torch.tensor([tokenizer.encode(prompt)[:-1]])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, 1:])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    parser.add_argument("--fsdp", action="store_true", help="shard the model with FSDP2 instead of DDP")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                        help="auto: what every rank supports (bf16 / fp16+GradScaler / fp32 on CPU)")
    parser.add_argument("--storage-path", default=None)
    parser.add_argument("--name", default=None, help="run name; the same name again resumes (default by mode)")
    args = parser.parse_args(argv)
    name = args.name or ("llama_finetune_fsdp" if args.fsdp else "llama_finetune_ddp")
    result = run({"steps": args.steps, "fsdp": args.fsdp, "precision": args.precision},
                 num_workers=args.workers, storage_path=args.storage_path, name=name)
    m = result.metrics
    print(f"step {m['step']}: loss {m['loss']:.3f}, {m['tokens_per_s']:.0f} tokens/s ({m['precision']}); "
          f"checkpoint {result.checkpoint.path}")
    print(f"sample: {sample(result)!r}")


if __name__ == "__main__":
    main()
