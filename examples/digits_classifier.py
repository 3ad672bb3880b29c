"""An image classifier on scikit-learn's bundled 8x8 digits (1797 images, nothing downloaded), on 2 workers.

    python examples/digits_classifier.py               # 8 epochs; prints validation accuracy per epoch
    python examples/digits_classifier.py --epochs 12   # the same run name again: resumes at epoch 8

What it shows: ``prepare_model`` (DDP), ``prepare_data_loader`` (each worker sees its own shard),
validation accuracy summed over all workers, a checkpoint every epoch with
``train.report(..., checkpoint=Checkpoint.from_directory(folder))`` and resuming from
``train.get_checkpoint()``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rafter import train
from rafter.train import Checkpoint, RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer


def load_datasets(val_fraction: float = 0.2, seed: int = 0):
    """(train, validation) TensorDatasets of (1x8x8 float image in [0, 1], label)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))  # same split everywhere
    n_val = int(len(labels) * val_fraction)
    val, tr = order[:n_val], order[n_val:]
    return TensorDataset(images[tr], labels[tr]), TensorDataset(images[val], labels[val])


class DigitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 4 x 4
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def train_func(config: dict) -> None:
    epochs, lr, batch_size = config.get("epochs", 8), config.get("lr", 2e-3), config.get("batch_size", 32)
    train_set, val_set = load_datasets()
    # prepare_data_loader adds a DistributedSampler (each worker gets 1/N of the data) and moves batches
    # to the worker's device.
    train_loader = train.torch.prepare_data_loader(DataLoader(train_set, batch_size=batch_size, shuffle=True))
    val_loader = train.torch.prepare_data_loader(DataLoader(val_set, batch_size=256))

    torch.manual_seed(0)
    model = train.torch.prepare_model(DigitNet())  # to the device, wrapped in DDP with 2+ workers
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    # The unwrapped model: its state dict has plain names, without DDP's "module." prefix.
    raw_model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    start_epoch = 0
    checkpoint = train.get_checkpoint()  # set when this run is resumed (same name) or restarted
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "state.pt"), map_location="cpu", weights_only=True)
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1

    rank = train.get_context().get_world_rank()
    for epoch in range(start_epoch, epochs):
        if hasattr(train_loader.sampler, "set_epoch"):  # a new shuffle order each epoch
            train_loader.sampler.set_epoch(epoch)
        model.train()
        loss_sum, batches = 0.0, 0
        for images, labels in train_loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()  # DDP averages the gradients of all workers here
            optimizer.step()
            loss_sum, batches = loss_sum + loss.item(), batches + 1

        model.eval()
        counts = torch.zeros(2)  # [correct, seen] on this worker's shard of the validation set
        with torch.no_grad():
            for images, labels in val_loader:
                counts += torch.tensor([(model(images).argmax(1) == labels).sum().item(), len(labels)])
        if dist.is_initialized():
            dist.all_reduce(counts)  # summed over workers: the accuracy on the whole validation set
        metrics = {"epoch": epoch, "train_loss": loss_sum / batches, "val_accuracy": (counts[0] / counts[1]).item()}

        # Rank 0 writes the checkpoint (every rank holds the same weights under DDP); the others report
        # metrics only. report() copies the folder into the run's storage before it returns.
        with tempfile.TemporaryDirectory() as folder:
            ckpt = None
            if rank == 0:
                torch.save({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                           os.path.join(folder, "state.pt"))
                ckpt = Checkpoint.from_directory(folder)
            train.report(metrics, checkpoint=ckpt)


def run(epochs: int = 8, num_workers: int = 2, storage_path=None, name: str = "digits_classifier"):
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"epochs": epochs},
        scaling_config=ScalingConfig(num_workers=num_workers),
        run_config=RunConfig(name=name, storage_path=storage_path),  # same name again = resume
    )
    return trainer.fit()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--storage-path", default=None)
    parser.add_argument("--name", default="digits_classifier")
    args = parser.parse_args(argv)
    result = run(args.epochs, args.workers, args.storage_path, args.name)
    for m in result.metrics_history:
        print(f"epoch {m['epoch']}: train loss {m['train_loss']:.3f}, validation accuracy {m['val_accuracy']:.3f}")
    print(f"checkpoint: {result.checkpoint.path}")


if __name__ == "__main__":
    main()
