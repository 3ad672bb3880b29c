# Ray Train's "Get Started with Distributed Training using PyTorch Lightning" example (docs.ray.io,
# train/getting-started-pytorch-lightning), run on rafter. Changed lines, each marked "# rafter:":
# - every `ray` became `rafter`;
# - the torchvision imports come from tiny_vision (a small CNN and 256 local images instead of resnet18
#   and the FashionMNIST download): the import lines change, the calls don't;
# - `max_epochs=10` is 2, and `use_gpu=True` follows the machine.
import os
import tempfile

import torch
from torch.utils.data import DataLoader
from tiny_vision import resnet18  # rafter: was from torchvision.models
from tiny_vision import FashionMNIST  # rafter: was from torchvision.datasets
from tiny_vision import ToTensor, Normalize, Compose  # rafter: was from torchvision.transforms
import lightning.pytorch as pl

import rafter.train.lightning  # rafter
from rafter.train.torch import TorchTrainer  # rafter

# Model, Loss, Optimizer
class ImageClassifier(pl.LightningModule):
    def __init__(self):
        super(ImageClassifier, self).__init__()
        self.model = resnet18(num_classes=10)
        self.model.conv1 = torch.nn.Conv2d(
            1, 64, kernel_size=(7, 7), stride=(2, 2), padding=(3, 3), bias=False
        )
        self.criterion = torch.nn.CrossEntropyLoss()

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        outputs = self.forward(x)
        loss = self.criterion(outputs, y)
        self.log("loss", loss, on_step=True, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=0.001)


def train_func():
    # Data
    transform = Compose([ToTensor(), Normalize((0.28604,), (0.32025,))])
    data_dir = os.path.join(tempfile.gettempdir(), "data")
    train_data = FashionMNIST(root=data_dir, train=True, download=True, transform=transform)
    train_dataloader = DataLoader(train_data, batch_size=128, shuffle=True)

    # Training
    model = ImageClassifier()
    # [1] Configure PyTorch Lightning Trainer.
    trainer = pl.Trainer(
        max_epochs=2,  # rafter: was 10
        devices="auto",
        accelerator="auto",
        strategy=rafter.train.lightning.RayDDPStrategy(),  # rafter
        plugins=[rafter.train.lightning.RayLightningEnvironment()],  # rafter
        callbacks=[rafter.train.lightning.RayTrainReportCallback()],  # rafter
        # [1a] Optionally, disable the default checkpointing behavior
        # in favor of the `RayTrainReportCallback` above.
        enable_checkpointing=False,
    )
    trainer = rafter.train.lightning.prepare_trainer(trainer)  # rafter
    trainer.fit(model, train_dataloaders=train_dataloader)

# [2] Configure scaling and resource requirements.
scaling_config = rafter.train.ScalingConfig(num_workers=2, use_gpu=torch.cuda.is_available())  # rafter

# [3] Launch distributed training job.
trainer = TorchTrainer(
    train_func,
    scaling_config=scaling_config,
    # [3a] If running in a multi-node cluster, this is where you
    # should configure the run's persistent storage that is accessible
    # across all worker nodes.
    # run_config=rafter.train.RunConfig(storage_path="s3://..."),  # rafter
)
result: rafter.train.Result = trainer.fit()  # rafter

# [4] Load the trained model.
with result.checkpoint.as_directory() as checkpoint_dir:
    model = ImageClassifier.load_from_checkpoint(
        os.path.join(
            checkpoint_dir,
            rafter.train.lightning.RayTrainReportCallback.CHECKPOINT_NAME,  # rafter
        ),
    )
print("LOADED", type(model).__name__, "EPOCHS", [m["epoch"] for m in result.metrics_history], flush=True)  # rafter
