"""ScalingConfig(num_workers=(min, max)) on the local backend: as many workers as the machine's CPUs hold,
within the range (this machine: os.sched_getaffinity)."""

import os

import pytest

import rafter.train as train
from rafter.train import RunConfig, ScalingConfig
from rafter.train.torch import TorchTrainer

CPUS = len(os.sched_getaffinity(0))


def world(config):
    train.report({"world": train.get_context().get_world_size()})


def _fit(tmp_path, workers, name="run"):
    return TorchTrainer(world, scaling_config=ScalingConfig(num_workers=workers),
                        run_config=RunConfig(name=name, storage_path=str(tmp_path / "results"))).fit()


def test_an_elastic_range_runs_as_many_workers_as_the_cpus_hold(tmp_path):
    assert _fit(tmp_path, (1, CPUS + 6)).metrics["world"] == CPUS
    assert _fit(tmp_path, (1, 1), name="one").metrics["world"] == 1


def test_a_minimum_above_the_cpus_runs_the_minimum_oversubscribed(tmp_path, caplog):
    assert _fit(tmp_path, (CPUS + 1, CPUS + 4)).metrics["world"] == CPUS + 1
    assert "oversubscribed" in caplog.text


def test_the_same_elastic_run_can_be_run_again(tmp_path):
    _fit(tmp_path, (1, 4))
    assert _fit(tmp_path, (1, 4)).metrics["world"] == min(4, CPUS)


@pytest.mark.parametrize("bad", [(0, 2), (3, 2), (1, 2, 3), (1.0, 2), ("1", 2)])
def test_a_bad_range_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"ScalingConfig\(num_workers=.*\(min, max\)"):
        ScalingConfig(num_workers=bad)
