"""``rafter.train.lightning``: run a PyTorch Lightning ``Trainer`` inside a rafter train function, with
Ray Train 2.60's names (``lightning`` 2.x, or the older ``pytorch_lightning`` package).

    import lightning.pytorch as pl
    from rafter.train.lightning import (RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback,
                                        prepare_trainer)

    def train_func():
        trainer = pl.Trainer(devices="auto", accelerator="auto", strategy=RayDDPStrategy(),
                             plugins=[RayLightningEnvironment()], callbacks=[RayTrainReportCallback()],
                             enable_checkpointing=False)
        trainer = prepare_trainer(trainer)
        trainer.fit(model, train_dataloaders=loader)

Lightning then uses rafter's ranks and rafter's process group (it doesn't start processes or create a
group of its own); ``RayTrainReportCallback`` reports ``trainer.callback_metrics`` and a Lightning
checkpoint (``checkpoint.ckpt``) at the end of every training epoch.
"""

from rafter.train.lightning._lightning_utils import (
    RayDDPStrategy,
    RayFSDPStrategy,
    RayLightningEnvironment,
    RayTrainReportCallback,
    prepare_trainer,
)

__all__ = [
    "RayDDPStrategy",
    "RayFSDPStrategy",
    "RayLightningEnvironment",
    "RayTrainReportCallback",
    "prepare_trainer",
]
