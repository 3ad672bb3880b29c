import pytest

from rafter.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from rafter.train.torch import TorchConfig, TorchTrainer


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(num_workers=-1), "num_workers=-1"),
        (dict(num_workers=-2), "num_workers=-2"),
        (dict(num_workers=2.5), "num_workers=2.5"),
        (dict(num_workers="4"), "num_workers='4'"),
        (dict(num_workers=True), "num_workers=True"),
        (dict(resources_per_worker={"CPU": -1}), "'CPU': -1"),
        (dict(resources_per_worker={"CPU": "two"}), "'CPU': 'two'"),
        (dict(resources_per_worker={"GPU": 1}), "use_gpu=False"),
        (dict(resources_per_worker=[1]), "resources_per_worker=[1]"),
        (dict(placement_strategy="DIAGONAL"), "DIAGONAL"),
        (dict(use_gpu="yes"), "use_gpu='yes'"),
    ],
)
def test_bad_scaling_config_names_field_and_value(kwargs, needle):
    with pytest.raises(ValueError) as info:
        ScalingConfig(**kwargs)
    assert needle in str(info.value)


def test_scaling_defaults_match_ray():
    s = ScalingConfig()
    assert (s.num_workers, s.use_gpu, s.placement_strategy) == (1, False, "PACK")
    assert s.cpus_per_worker == 1.0 and s.gpus_per_worker == 0.0
    g = ScalingConfig(num_workers=2, use_gpu=True)
    assert g.gpus_per_worker == 1.0 and g.cpus_per_worker == 0.0
    assert ScalingConfig(num_workers=3, resources_per_worker={"CPU": 2}).total_resources["CPU"] == 6


@pytest.mark.parametrize(
    "factory, needle",
    [
        (lambda: FailureConfig(max_failures=-2), "max_failures=-2"),
        (lambda: CheckpointConfig(num_to_keep=0), "num_to_keep=0"),
        (lambda: CheckpointConfig(checkpoint_score_order="up"), "'up'"),
        (lambda: RunConfig(name="a/b"), "name='a/b'"),
        (lambda: RunConfig(cluster="k8s"), "cluster='k8s'"),
        (lambda: RunConfig(hang_timeout_s=0), "hang_timeout_s=0"),
        (lambda: RunConfig(memory_threshold=1.5), "memory_threshold=1.5"),
        (lambda: TorchConfig(backend="mpi"), "backend='mpi'"),
        (lambda: TorchConfig(timeout_s=-1), "timeout_s=-1"),
    ],
)
def test_bad_configs(factory, needle):
    with pytest.raises(ValueError) as info:
        factory()
    assert needle in str(info.value)


def test_trainer_rejects_wrong_config_types():
    with pytest.raises(TypeError, match="scaling_config"):
        TorchTrainer(lambda: None, scaling_config={"num_workers": 2})
    with pytest.raises(TypeError, match="train_loop_per_worker"):
        TorchTrainer(42)


def test_run_config_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    rc = RunConfig()
    assert rc.storage_path == str(tmp_path / "rafter_results")
    assert rc.name.startswith("rafter_run-")
    assert rc.failure_config.max_failures == 0
