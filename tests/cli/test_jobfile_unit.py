"""In-process checks of the job-file pipeline's edge cases (the CLI tests run it as a subprocess)."""

import dataclasses

import pytest

from rafter._cli import schema
from rafter._cli.errors import ConfigError
from rafter._cli.jobfile import load_job
from rafter.train.torch import TorchConfig
from tests.cli.conftest import FUNCS


def test_schema_defaults_are_the_config_classes_defaults():
    from rafter.train import CheckpointConfig, FailureConfig, ScalingConfig

    for cls in (ScalingConfig, FailureConfig, CheckpointConfig, TorchConfig):
        section, (name, fields) = next((k, v) for k, v in schema.SECTIONS.items() if v[0] == cls.__name__)
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        assert {key: field.default for key, field in fields.items()} == {key: defaults[key] for key in fields}, section


def test_checking_a_job_file_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    (tmp_path / "job.yaml").write_text("train: x.py:f\ntorch: {backend: gloo, timeout_s: 60}\n")
    code = ("import sys; from rafter._cli.jobfile import load_job; job = load_job(sys.argv[1], load_train=False); "
            "assert job.torch_config.timeout_s == 60 and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "job.yaml")], check=True)


def test_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("RAFTER_T_WORKERS", "3")
    monkeypatch.setenv("RAFTER_T_NAME", "007")
    monkeypatch.setenv("RAFTER_T_EMPTY", "")
    monkeypatch.delenv("RAFTER_T_UNSET", raising=False)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        f"train: {FUNCS}:steps\n"
        "scaling: {num_workers: '${RAFTER_T_WORKERS}'}\n"        # whole reference, int key: becomes 3
        "run:\n  name: ${RAFTER_T_NAME}\n"                        # str key: stays '007'
        "  storage_path: /data/$${NOT_EXPANDED}/${RAFTER_T_UNSET:-x}\n"
        "train_loop_config:\n"
        "  a: ${RAFTER_T_EMPTY:-fallback}\n"                      # :- also replaces an empty value
        "  b: ${RAFTER_T_EMPTY-fallback}\n"                       # - only replaces an unset one
        "  c: ${RAFTER_T_UNSET:-0.5}\n"
    )
    job = load_job(str(job_file), load_train=False)
    assert job.scaling.num_workers == 3
    assert job.values["run"]["name"] == "007"
    assert job.values["run"]["storage_path"] == "/data/${NOT_EXPANDED}/x"
    assert job.values["train_loop_config"] == {"a": "fallback", "b": None, "c": 0.5}


def test_set_flags_alone_and_resource_sub_keys():
    job = load_job(None, [f"train={FUNCS}:steps", "scaling.resources_per_worker.CPU=2", "train_loop_config.x.y=1"],
                   load_train=False)
    assert job.scaling.resources_per_worker == {"CPU": 2}
    assert job.values["train_loop_config"] == {"x": {"y": 1}}
    assert job.origin("scaling.resources_per_worker.CPU") == "--set scaling.resources_per_worker.CPU=2"
    with pytest.raises(ConfigError, match="scaling.use_gpu has no sub-keys"):
        load_job(None, [f"train={FUNCS}:steps", "scaling.use_gpu.x=1"], load_train=False)


def test_a_default_run_name_is_chosen_once(tmp_path):
    job = load_job(None, [f"train={FUNCS}:steps"], load_train=False)
    assert job.run_config().name == job.run_config().name
