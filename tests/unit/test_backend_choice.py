"""Which backend a run gets, and what the local backend makes of a request, without starting anything."""

from rafter._backends import create, resolve_cluster
from rafter._backends.local.backend import LocalBackend, available_cpus, cpu_plan
from rafter.train import RunConfig, ScalingConfig


def test_auto_is_ray_only_with_an_address_or_a_connection(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_cluster("auto") == "local"  # Ray is not imported here (the Ray tests run last)
    assert isinstance(create(RunConfig(storage_path=str(tmp_path))), LocalBackend)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_cluster("auto") == "ray"
    assert resolve_cluster("local") == "local"  # an explicit choice wins


def test_oversubscription_is_planned_once_for_the_driver_and_the_check_command():
    cpus = available_cpus()
    plan = cpu_plan(ScalingConfig(num_workers=cpus + 1, resources_per_worker={"CPU": 2}))
    assert plan.oversubscribed and plan.threads == 1 and plan.wanted == 2 * (cpus + 1)
    fits = cpu_plan(ScalingConfig(num_workers=1))
    assert not fits.oversubscribed and fits.threads == 1

