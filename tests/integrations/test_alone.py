"""Two workers that train alone (no collective ever crosses their process group) get one warning with the fix."""

import pytest
import torch

from rafter import train
from rafter.train import RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer


def unwrapped(config):
    model = torch.nn.Linear(4, 1)  # never passed to prepare_model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        train.report({"step": step, "loss": loss.item()})


def _rank_log(tmp_path, fn, name, num_workers=2):
    TorchTrainer(fn, scaling_config=ScalingConfig(num_workers=num_workers),
                 run_config=RunConfig(name=name, storage_path=str(tmp_path))).fit()
    logs = tmp_path / name / "logs"
    return {r: (logs / f"rank_{r}.log").read_text() for r in range(num_workers)}


def test_an_unwrapped_model_on_two_workers_warns_once_on_rank_0_naming_prepare_model(tmp_path):
    logs = _rank_log(tmp_path, unwrapped, "alone")
    assert logs[0].count("training its own copy of the model, alone") == 1, logs[0]
    assert "by report 2 of rank 0" in logs[0]
    assert "model = rafter.train.torch.prepare_model(model)" in logs[0]
    assert "alone" not in logs[1]


def default_lightning_trainer(config):
    import lightning.pytorch as pl

    from rafter.train.lightning import RayTrainReportCallback, prepare_trainer
    from tests.integrations.tiny import lightning_module_class, regression_loader

    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", callbacks=[RayTrainReportCallback()],
                         enable_checkpointing=False, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=config["output_dir"])
    try:
        prepare_trainer(trainer)
    except RuntimeError as exc:
        refused = str(exc)
    trainer.fit(lightning_module_class()(), train_dataloaders=regression_loader())

    from lightning.pytorch.plugins.environments import LightningEnvironment

    from rafter.train.lightning import RayDDPStrategy

    wrong_environment = pl.Trainer(accelerator="cpu", strategy=RayDDPStrategy(), plugins=[LightningEnvironment()],
                                   logger=False, default_root_dir=config["output_dir"])
    try:
        prepare_trainer(wrong_environment)
    except RuntimeError as exc:
        environment = str(exc)
    return {"refused": refused, "world_size": trainer.world_size, "environment": environment}


def test_a_default_lightning_trainer_on_two_workers_is_refused_by_prepare_trainer_and_warned_about(tmp_path):
    pytest.importorskip("lightning")
    result = TorchTrainer(default_lightning_trainer, train_loop_config={"output_dir": str(tmp_path / "pl")},
                          scaling_config=ScalingConfig(num_workers=2),
                          run_config=RunConfig(name="pl_alone", storage_path=str(tmp_path))).fit()
    assert result.return_value["world_size"] == 1  # what the issue saw: each rank alone
    assert "strategy is SingleDeviceStrategy" in result.return_value["refused"]
    assert "strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()]" in result.return_value["refused"]
    assert "cluster environment is LightningEnvironment" in result.return_value["environment"]
    assert "plugins=[RayLightningEnvironment()]" in result.return_value["environment"]
    log = (tmp_path / "pl_alone" / "logs" / "rank_0.log").read_text()
    assert "RayTrainReportCallback: the Lightning Trainer runs SingleDeviceStrategy on each of the 2" in log
    assert "training its own copy of the model, alone. Likely fix: wrap the model" in log
    assert "; a Lightning Trainer needs rafter's strategy and cluster environment" in log
