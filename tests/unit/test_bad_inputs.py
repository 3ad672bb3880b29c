"""Every bad input gets one clear error at the call, before anything is written.

Each row is one bad input: the call, the exception type, and two fragments the message must hold (the
argument as the user wrote it, and the value). Every test snapshots its folder (a storage folder that
already holds a run, and the current folder) before the call and checks that nothing changed.
"""

import hashlib
import math
import os
import time
import warnings

import pytest
import torch

from rafter._cli.errors import ConfigError
from rafter._cli.jobfile import load_job
from rafter._run_folder import IncompatibleRunError
from rafter._cli.yamlread import MAX_DEPTH, MAX_FILE_BYTES, MAX_VALUES
from rafter.train import (
    Callback,
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    Result,
    RunConfig,
    ScalingConfig,
    report,
)
from rafter.train.callbacks import MLflowCallback, TensorBoardCallback
from rafter.train._validation import ConfigTypeError, ConfigValueError, RemovedArgumentError
from rafter.train.torch import (
    TorchConfig,
    TorchTrainer,
    enable_reproducibility,
    get_state_dict,
    load_checkpoint_file,
    load_state_dict,
    prepare_data_loader,
    prepare_model,
)

CVE, CTE, REMOVED = ConfigValueError, ConfigTypeError, RemovedArgumentError


def one_arg(config):
    pass


def no_args():
    pass


def two_args(a, b):
    pass


def gen_fn(config):
    yield


async def async_fn(config):
    pass


def has_module(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


# (id, call(storage) -> raises, exception type, argument fragment, value fragment)
API = [
    # ScalingConfig
    ("workers_none", lambda s: ScalingConfig(num_workers=None), CVE, "num_workers", "None"),
    ("workers_elastic_reversed", lambda s: ScalingConfig(num_workers=(4, 2)), CVE, "num_workers", "(4, 2)"),
    ("workers_nan", lambda s: ScalingConfig(num_workers=math.nan), CVE, "num_workers", "nan"),
    ("cpu_inf", lambda s: ScalingConfig(resources_per_worker={"CPU": math.inf}), CVE, "resources_per_worker", "inf"),
    ("cpu_nan", lambda s: ScalingConfig(resources_per_worker={"CPU": math.nan}), CVE, "resources_per_worker", "nan"),
    ("cpu_bool", lambda s: ScalingConfig(resources_per_worker={"CPU": True}), CVE, "resources_per_worker", "True"),
    ("resource_empty_name", lambda s: ScalingConfig(resources_per_worker={"": 1}), CVE, "resources_per_worker", "''"),
    ("resource_int_name", lambda s: ScalingConfig(resources_per_worker={1: 1}), CVE, "resources_per_worker", "{1: 1}"),
    ("resource_lowercase_cpu", lambda s: ScalingConfig(resources_per_worker={"cpu": 2}), CVE, "resources_per_worker",
     "'cpu' is not 'CPU'"),
    ("memory_in_gib_not_bytes", lambda s: ScalingConfig(resources_per_worker={"memory": 8}), CVE,
     "resources_per_worker", "{'memory': 8}"),
    ("accelerator_int", lambda s: ScalingConfig(accelerator_type=7), CVE, "accelerator_type", "7"),
    ("accelerator_empty", lambda s: ScalingConfig(accelerator_type=""), CVE, "accelerator_type", "''"),
    ("placement_lowercase", lambda s: ScalingConfig(placement_strategy="pack"), CVE, "placement_strategy", "'pack'"),
    ("placement_none", lambda s: ScalingConfig(placement_strategy=None), CVE, "placement_strategy", "None"),
    ("use_gpu_int", lambda s: ScalingConfig(use_gpu=1), CVE, "use_gpu", "1"),
    ("use_gpu_none", lambda s: ScalingConfig(use_gpu=None), CVE, "use_gpu", "None"),
    ("trainer_resources_v1", lambda s: ScalingConfig(trainer_resources={"CPU": 1}), REMOVED, "trainer_resources",
     "{'CPU': 1}"),
    # FailureConfig
    ("max_failures_float", lambda s: FailureConfig(max_failures=1.5), CVE, "max_failures", "1.5"),
    ("max_failures_str", lambda s: FailureConfig(max_failures="3"), CVE, "max_failures", "'3'"),
    ("max_failures_none", lambda s: FailureConfig(max_failures=None), CVE, "max_failures", "None"),
    ("max_failures_bool", lambda s: FailureConfig(max_failures=True), CVE, "max_failures", "True"),
    ("fail_fast_v1", lambda s: FailureConfig(fail_fast=True), REMOVED, "fail_fast", "True"),
    # CheckpointConfig
    ("num_to_keep_negative", lambda s: CheckpointConfig(num_to_keep=-1), CVE, "num_to_keep", "-1"),
    ("num_to_keep_float", lambda s: CheckpointConfig(num_to_keep=1.0), CVE, "num_to_keep", "1.0"),
    ("num_to_keep_str", lambda s: CheckpointConfig(num_to_keep="2"), CVE, "num_to_keep", "'2'"),
    ("score_attribute_int", lambda s: CheckpointConfig(checkpoint_score_attribute=5), CVE,
     "checkpoint_score_attribute", "5"),
    ("score_attribute_empty", lambda s: CheckpointConfig(checkpoint_score_attribute=""), CVE,
     "checkpoint_score_attribute", "''"),
    ("score_order_upper", lambda s: CheckpointConfig(checkpoint_score_order="MAX"), CVE, "checkpoint_score_order",
     "'MAX'"),
    ("score_order_none", lambda s: CheckpointConfig(checkpoint_score_order=None), CVE, "checkpoint_score_order",
     "None"),
    ("checkpoint_frequency_v1", lambda s: CheckpointConfig(checkpoint_frequency=10), REMOVED, "checkpoint_frequency",
     "10"),
    ("checkpoint_at_end_v1", lambda s: CheckpointConfig(checkpoint_at_end=True), REMOVED, "checkpoint_at_end", "True"),
    # RunConfig: config objects in the wrong place
    ("failure_config_int", lambda s: RunConfig(storage_path=s, failure_config=3), CTE, "failure_config", "3"),
    ("failure_config_swapped", lambda s: RunConfig(storage_path=s, failure_config=CheckpointConfig()), CTE,
     "failure_config", "CheckpointConfig("),
    ("checkpoint_config_dict", lambda s: RunConfig(storage_path=s, checkpoint_config={"num_to_keep": 2}), CTE,
     "checkpoint_config", "{'num_to_keep': 2}"),
    ("logging_config_str", lambda s: RunConfig(storage_path=s, logging_config="INFO"), CTE, "logging_config",
     "'INFO'"),
    # RunConfig: callbacks
    ("callbacks_string", lambda s: RunConfig(storage_path=s, callbacks="tensorboard"), CVE, "callbacks",
     "'tensorboard'"),
    ("callbacks_single_object", lambda s: RunConfig(storage_path=s, callbacks=Callback()), CVE, "callbacks",
     "Callback object"),
    ("callbacks_class_not_instance", lambda s: RunConfig(storage_path=s, callbacks=[Callback]), CVE, "callbacks",
     "class Callback"),
    ("callbacks_no_hooks", lambda s: RunConfig(storage_path=s, callbacks=[object()]), CVE, "callbacks[0]", "object"),
    ("callbacks_name_in_list", lambda s: RunConfig(storage_path=s, callbacks=["tensorboard"]), CVE, "callbacks[0]",
     "'tensorboard'"),
    # RunConfig: names and paths that can't be folders
    ("name_nul", lambda s: RunConfig(storage_path=s, name="a\x00b"), CVE, "name", "'a\\x00b'"),
    ("name_300_chars", lambda s: RunConfig(storage_path=s, name="n" * 300), CVE, "name", "'nnnnnnnn"),
    ("name_300_bytes_unicode", lambda s: RunConfig(storage_path=s, name="é" * 130), CVE, "name", "260 bytes"),
    ("name_empty", lambda s: RunConfig(storage_path=s, name=""), CVE, "name", "''"),
    ("name_dotdot", lambda s: RunConfig(storage_path=s, name=".."), CVE, "name", "'..'"),
    ("name_int", lambda s: RunConfig(storage_path=s, name=5), CVE, "name", "5"),
    ("name_padded", lambda s: RunConfig(storage_path=s, name=" run "), CVE, "name", "' run '"),
    ("name_tab", lambda s: RunConfig(storage_path=s, name="a\tb"), CVE, "name", "'a\\tb'"),
    ("storage_empty", lambda s: RunConfig(storage_path=""), CVE, "storage_path", "''"),
    ("storage_blank", lambda s: RunConfig(storage_path="   "), CVE, "storage_path", "'   '"),
    ("storage_nul", lambda s: RunConfig(storage_path=s + "\x00x"), CVE, "storage_path", "\\x00x"),
    ("storage_int", lambda s: RunConfig(storage_path=5), CVE, "storage_path", "5"),
    ("cluster_capitalised", lambda s: RunConfig(storage_path=s, cluster="Local"), CVE, "cluster", "'Local'"),
    ("cluster_address_int", lambda s: RunConfig(storage_path=s, cluster_address=5), CVE, "cluster_address", "5"),
    ("hang_timeout_inf", lambda s: RunConfig(storage_path=s, hang_timeout_s=math.inf), CVE, "hang_timeout_s", "inf"),
    ("hang_timeout_str", lambda s: RunConfig(storage_path=s, hang_timeout_s="60"), CVE, "hang_timeout_s", "'60'"),
    ("memory_threshold_zero", lambda s: RunConfig(storage_path=s, memory_threshold=0), CVE, "memory_threshold", "0"),
    ("memory_threshold_nan", lambda s: RunConfig(storage_path=s, memory_threshold=math.nan), CVE,
     "memory_threshold", "nan"),
    # RunConfig: Ray V1 arguments
    ("verbose_v1", lambda s: RunConfig(storage_path=s, verbose=2), REMOVED, "verbose", "2"),
    ("sync_config_v1", lambda s: RunConfig(storage_path=s, sync_config="sync"), REMOVED, "sync_config", "'sync'"),
    ("stop_v1", lambda s: RunConfig(storage_path=s, stop={"loss": 0.1}), REMOVED, "stop", "{'loss': 0.1}"),
    ("progress_reporter_v1", lambda s: RunConfig(storage_path=s, progress_reporter="cli"), REMOVED,
     "progress_reporter", "'cli'"),
    ("log_to_file_v1", lambda s: RunConfig(storage_path=s, log_to_file=True), REMOVED, "log_to_file", "True"),
    # LoggingConfig
    ("echo_output_str", lambda s: LoggingConfig(echo_worker_output="yes"), CVE, "echo_worker_output", "'yes'"),
    ("log_level_int", lambda s: LoggingConfig(log_level=10), CVE, "log_level", "10"),
    # TorchConfig
    ("timeout_inf", lambda s: TorchConfig(timeout_s=math.inf), CVE, "timeout_s", "inf"),
    ("timeout_nan", lambda s: TorchConfig(timeout_s=math.nan), CVE, "timeout_s", "nan"),
    ("timeout_huge", lambda s: TorchConfig(timeout_s=10**12), CVE, "timeout_s", "1000000000000"),
    ("timeout_str", lambda s: TorchConfig(timeout_s="1800"), CVE, "timeout_s", "'1800'"),
    ("timeout_bool", lambda s: TorchConfig(timeout_s=True), CVE, "timeout_s", "True"),
    ("backend_uppercase", lambda s: TorchConfig(backend="NCCL"), CVE, "backend", "'NCCL'"),
    ("init_method_file", lambda s: TorchConfig(init_method="file"), CVE, "init_method", "'file'"),
    # TorchTrainer
    ("train_fn_string", lambda s: TorchTrainer("train.py:f"), CTE, "train_loop_per_worker", "'train.py:f'"),
    ("train_fn_generator", lambda s: TorchTrainer(gen_fn), CTE, "train_loop_per_worker", "gen_fn is a generator"),
    ("train_fn_async", lambda s: TorchTrainer(async_fn), CTE, "train_loop_per_worker", "async_fn is an async"),
    ("scaling_config_class", lambda s: TorchTrainer(one_arg, scaling_config=ScalingConfig), CTE, "scaling_config",
     "the class itself"),
    ("train_fn_two_args", lambda s: TorchTrainer(two_args), CVE, "train_loop_per_worker", "two_args"),
    ("train_config_list", lambda s: TorchTrainer(one_arg, train_loop_config=[1, 2]), CTE, "train_loop_config",
     "[1, 2]"),
    ("train_config_str", lambda s: TorchTrainer(one_arg, train_loop_config="lr=0.1"), CTE, "train_loop_config",
     "'lr=0.1'"),
    ("run_config_swapped", lambda s: TorchTrainer(one_arg, run_config=ScalingConfig()), CTE, "run_config",
     "ScalingConfig("),
    ("torch_config_dict", lambda s: TorchTrainer(one_arg, torch_config={"backend": "gloo"}), CTE, "torch_config",
     "{'backend': 'gloo'}"),
    ("nccl_without_gpus", lambda s: TorchTrainer(one_arg, torch_config=TorchConfig(backend="nccl")), CVE, "backend",
     "'nccl'"),
    ("resume_from_checkpoint_v1", lambda s: TorchTrainer(one_arg, resume_from_checkpoint=s), REMOVED,
     "resume_from_checkpoint", "results"),
    ("metadata_v1", lambda s: TorchTrainer(one_arg, metadata={"a": 1}), REMOVED, "metadata", "{'a': 1}"),
    ("datasets_not_ray_data", lambda s: TorchTrainer(one_arg, datasets={"train": [1]}), CTE, "datasets",
     "{'train': [1]}"),
    ("restore_v1", lambda s: TorchTrainer.restore(s), REMOVED, "TorchTrainer.restore()", "fit() again"),
    ("can_restore_v1", lambda s: TorchTrainer.can_restore(s), REMOVED, "TorchTrainer.can_restore()", "fit() again"),
    # tracker callbacks (checked before their package is imported)
    ("tensorboard_logdir_int", lambda s: TensorBoardCallback(logdir=5), CVE, "logdir", "5"),
    ("tensorboard_logdir_empty", lambda s: TensorBoardCallback(logdir=""), CVE, "logdir", "''"),
    ("mlflow_uri_int", lambda s: MLflowCallback(tracking_uri=5000), CVE, "tracking_uri", "5000"),
    ("mlflow_experiment_empty", lambda s: MLflowCallback(experiment_name=""), CVE, "experiment_name", "''"),
    # Checkpoint
    ("checkpoint_empty_path", lambda s: Checkpoint(""), CVE, "path", "''"),
    ("checkpoint_int_path", lambda s: Checkpoint(3), CVE, "path", "3"),
    ("checkpoint_nul_path", lambda s: Checkpoint("ck\x00pt"), CVE, "path", "'ck\\x00pt'"),
    # report() (its argument checks come before the "only inside a train function" check)
    ("report_dir_name_slash", lambda s: report({"loss": 1.0}, checkpoint_dir_name="a/b"), CVE, "checkpoint_dir_name",
     "'a/b'"),
    ("report_dir_name_int", lambda s: report({"loss": 1.0}, checkpoint_dir_name=5), CVE, "checkpoint_dir_name", "5"),
    # helpers a train function calls (argument checks come before the "only inside a train function" check)
    ("prepare_model_not_a_module", lambda s: prepare_model("model"), CTE, "model", "'model'"),
    ("prepare_model_bad_device", lambda s: prepare_model(torch.nn.Linear(1, 1), move_to_device="gpu0"), CTE,
     "move_to_device", "'gpu0'"),
    ("prepare_model_strategy_case", lambda s: prepare_model(torch.nn.Linear(1, 1), parallel_strategy="DDP"), CVE,
     "parallel_strategy", "'DDP'"),
    ("prepare_model_kwargs_list", lambda s: prepare_model(torch.nn.Linear(1, 1), parallel_strategy_kwargs=[1]), CTE,
     "parallel_strategy_kwargs", "[1]"),
    ("prepare_loader_not_a_loader", lambda s: prepare_data_loader([1, 2]), CTE, "data_loader", "[1, 2]"),
    ("prepare_loader_flag_str", lambda s: prepare_data_loader(torch.utils.data.DataLoader([1]), add_dist_sampler="no"),
     CVE, "add_dist_sampler", "'no'"),
    ("seed_too_big", lambda s: enable_reproducibility(2**40), CVE, "seed", "1099511627776"),
    ("seed_str", lambda s: enable_reproducibility("1"), CVE, "seed", "'1'"),
    ("state_dict_of_a_dict", lambda s: get_state_dict({"w": 1}), CTE, "model", "{'w': 1}"),
    ("load_state_optimizer_str", lambda s: load_state_dict(torch.nn.Linear(1, 1), {}, optimizer="adam"), CTE,
     "optimizer", "'adam'"),
    ("best_checkpoint_mode_typo", lambda s: Result(metrics={}).get_best_checkpoint("loss", mode="maximum"), CVE,
     "mode", "'maximum'"),
    ("best_checkpoint_metric_none", lambda s: Result(metrics={}).get_best_checkpoint(None), CVE, "metric", "None"),
    ("load_file_weights_only_str", lambda s: load_checkpoint_file(os.path.join(s, "m.pt"), weights_only="False"), CVE,
     "weights_only", "'False'"),
    ("load_file_empty_path", lambda s: load_checkpoint_file(""), CVE, "path", "''"),
    ("checkpoint_missing_folder", lambda s: Checkpoint.from_directory(os.path.join(s, "nope")), FileNotFoundError,
     "from_directory", "nope"),
]


def fit_with_storage(path):
    return TorchTrainer(one_arg, run_config=RunConfig(name="run", storage_path=path)).fit()


# Checked when fit() starts, before any process or folder is created.
FIT = [
    ("storage_is_a_file", lambda s: fit_with_storage(os.path.join(s, "old_run", "notes.txt")), CVE, "storage_path",
     "notes.txt"),
    ("storage_under_a_file", lambda s: fit_with_storage(os.path.join(s, "old_run", "notes.txt", "sub")), CVE,
     "storage_path", "notes.txt"),
    ("storage_not_creatable", lambda s: fit_with_storage("/proc/rafter_results"), CVE, "storage_path",
     "/proc/rafter_results"),
    ("storage_unknown_scheme", lambda s: fit_with_storage("s4://bucket/x"), CVE, "storage_path", "'s4'"),
    ("storage_scheme_typo", lambda s: fit_with_storage("s3:/bucket/x"), CVE, "storage_path", "s3://bucket/x"),
    ("storage_unknown_user", lambda s: fit_with_storage("~no_such_user_xyz/results"), CVE, "storage_path",
     "'~no_such_user_xyz' names no user"),
    # run folders that are not rafter's (the run-folder code's checks, listed here with the other bad inputs)
    ("run_folder_foreign_state", lambda s: TorchTrainer(
        one_arg, run_config=RunConfig(name="old_run", storage_path=s)).fit(), IncompatibleRunError, "rafter_run.json",
        'no "format" key'),
    ("run_folder_corrupt_state", lambda s: TorchTrainer(
        one_arg, run_config=RunConfig(name="corrupt", storage_path=s)).fit(), IncompatibleRunError,
        "corrupt/rafter_run.json", "not valid JSON"),
    ("result_from_corrupt_folder", lambda s: Result.from_path(os.path.join(s, "corrupt")), IncompatibleRunError,
     "corrupt/rafter_run.json", "not valid JSON"),
    pytest.param(("storage_s3_not_installed", lambda s: fit_with_storage("s3://bucket/x"), CVE, "storage_path",
                  "rafter-train[s3]"), marks=pytest.mark.skipif(has_module("s3fs"), reason="s3fs is installed")),
    pytest.param(("storage_gcs_not_installed", lambda s: fit_with_storage("gs://bucket/x"), CVE, "storage_path",
                  "rafter-train[gcs]"), marks=pytest.mark.skipif(has_module("gcsfs"), reason="gcsfs is installed")),
]


def snapshot(root):
    """Every file and folder under ``root`` with a hash of its content."""
    seen = {}
    for base, dirs, files in os.walk(root):
        for d in dirs:
            seen[os.path.relpath(os.path.join(base, d), root)] = "dir"
        for f in files:
            path = os.path.join(base, f)
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    seen[os.path.relpath(path, root)] = hashlib.sha1(fh.read()).hexdigest()
            else:
                seen[os.path.relpath(path, root)] = "special"
    return seen


@pytest.fixture
def storage(tmp_path, monkeypatch):
    """A storage folder that already holds a run; the test runs in tmp_path (so writes to "" would show)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = tmp_path / "results"
    (root / "old_run").mkdir(parents=True)
    (root / "old_run" / "notes.txt").write_text("kept\n")
    (root / "old_run" / "rafter_run.json").write_text('{"name": "old_run"}\n')
    (root / "corrupt").mkdir()
    (root / "corrupt" / "rafter_run.json").write_text("{not json\n")
    return str(root)


def _ids(rows):
    return [r.values[0][0] if hasattr(r, "values") else r[0] for r in rows]


@pytest.mark.parametrize("row", API + FIT, ids=_ids(API + FIT))
def test_bad_python_argument_is_refused_at_the_call(row, storage, tmp_path):
    _id, call, kind, argument, value = row
    before = snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one clear error, not a warning and then something else
        with pytest.raises(kind) as info:
            call(storage)
    message = str(info.value)
    assert type(info.value) is kind or kind in (FileNotFoundError,), type(info.value)
    assert argument in message, message
    assert value in message, message
    if isinstance(info.value, ConfigValueError):
        assert argument.split("[")[0] in (info.value.field, "storage_path"), info.value.field
        assert "Traceback" not in message
    assert snapshot(tmp_path) == before


def test_a_config_error_is_both_a_value_error_and_for_wrong_types_a_type_error():
    with pytest.raises(ValueError):
        RunConfig(failure_config=3)
    with pytest.raises(TypeError):
        RunConfig(failure_config=3)
    with pytest.raises(DeprecationWarning):  # what Ray 2.60 raises for the V1 arguments
        FailureConfig(fail_fast=True)
    err = pytest.raises(ValueError, ScalingConfig, num_workers=-1).value
    assert (err.config, err.field, err.value, err.example) == ("ScalingConfig", "num_workers", -1, 4)


def test_settings_accepted_and_ignored_warn_at_the_users_line(tmp_path):
    with pytest.warns(UserWarning, match=r"init_method='tcp'") as b:
        TorchConfig(init_method="tcp")
    with pytest.warns(UserWarning, match="train_loop_config=...\\) is ignored: no_args takes no arguments") as c:
        TorchTrainer(no_args, train_loop_config={"lr": 0.1})
    assert [w[0].filename for w in (b, c)] == [__file__] * 2


def test_total_resources_hold_no_zero_entries():
    assert ScalingConfig(num_workers=2).total_resources == {"CPU": 2.0}
    assert ScalingConfig(num_workers=2, use_gpu=True).total_resources == {"GPU": 2.0}
    assert ScalingConfig(resources_per_worker={"CPU": 0, "memory": 0}).total_resources == {}


# -- job files ------------------------------------------------------------------------------------------
T = "train: funcs.py:f\n"
FUNCS_PY = "def f(config):\n    pass\n"


def _bomb():
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(["train_loop_config:"] + ["  " + line for line in lines]) + "\n" + T


def _wide_bomb():  # fewer levels, still far past the bound
    return (T + "train_loop_config:\n  a: &a [" + ", ".join(["x"] * 1000) + "]\n  b: &b ["
            + ", ".join(["*a"] * 1000) + "]\n")


# (id, job text or a special path, fragment naming the place, fragment naming the value)
JOBS = [
    ("billion_laughs", _bomb(), "job.yaml", f"more than {MAX_VALUES} values"),
    ("wide_alias_bomb", _wide_bomb(), "job.yaml", "aliases (*name) are expanded"),
    ("recursive_alias", T + "train_loop_config: &x {a: *x}\n", "job.yaml", "alias refers to a mapping or list"),
    ("deep_nesting", T + "train_loop_config: {x: " + "[" * 1000 + "]" * 1000 + "}\n", "job.yaml",
     f"more than {MAX_DEPTH} levels deep"),
    ("deep_alias_chain", T + "train_loop_config:\n" + "".join(
        f"  k{i}: &k{i} [{'*k' + str(i - 1) if i else 1}]\n" for i in range(80)), "job.yaml",
     f"more than {MAX_DEPTH} levels deep"),
    ("named_pipe", "FIFO", "job.yaml", "is a named pipe"),
    ("dev_zero", "/dev/zero", "/dev/zero", "is a character device"),
    ("too_large", T + "train_loop_config: {pad: '" + "x" * (MAX_FILE_BYTES + 10) + "'}\n", "job.yaml",
     f"at most {MAX_FILE_BYTES} bytes"),
    ("not_utf8", b"train: funcs.py:f\nrun: {name: \xff\xfe}\n", "job.yaml", "can't read the file"),
    ("python_tag", T + "train_loop_config: !!python/object/apply:os.system [echo hi]\n", "job.yaml",
     "python/object/apply:os.system"),
    ("two_documents", T + "---\n" + T, "job.yaml", "single document"),
    ("nested_duplicate_key", T + "scaling:\n  num_workers: 2\n  num_workers: 3\n", "job.yaml",
     "'num_workers' appears twice"),
    ("integer_top_key", T + "1: x\n", "key 1", "unknown key 1"),
    ("run_name_nul", T + 'run:\n  name: "a\\0b"\n', "run.name", "NUL"),
    ("run_name_300", T + "run:\n  name: " + "n" * 300 + "\n", "run.name", "300 bytes"),
    ("storage_path_empty", T + "run:\n  storage_path: ''\n", "run.storage_path", "''"),
    ("torch_timeout_inf", T + "torch:\n  timeout_s: .inf\n", "torch.timeout_s = .inf", "at most"),
    ("torch_timeout_huge", T + "torch:\n  timeout_s: 1e12\n", "torch.timeout_s = 1000000000000.0", "at most"),
    ("callbacks_string", T + "run:\n  callbacks: tensorboard\n", "run.callbacks = tensorboard", "a list of trackers"),
    ("hang_timeout_inf", T + "run:\n  hang_timeout_s: .inf\n", "run.hang_timeout_s = .inf", "> 0"),
    ("memory_threshold_nan", T + "run:\n  memory_threshold: .nan\n", "run.memory_threshold = .nan", "(0, 1]"),
    ("cpu_inf", T + "scaling:\n  resources_per_worker: {CPU: .inf}\n", "scaling.resources_per_worker",
     "{CPU: .inf}"),
    ("score_attribute_empty", T + "checkpoint:\n  checkpoint_score_attribute: ''\n",
     "checkpoint.checkpoint_score_attribute = ''", "non-empty"),
    ("accelerator_empty", T + "scaling:\n  accelerator_type: ''\n", "scaling.accelerator_type = ''", "non-empty"),
    ("cluster_null", T + "cluster: null\n", "cluster = null", "can't be empty"),
    ("max_failures_float", T + "failure:\n  max_failures: 1.5\n", "failure.max_failures = 1.5", "an integer"),
    ("workers_exponent", T + "scaling:\n  num_workers: 1e3\n", "scaling.num_workers = 1000.0", "an integer"),
    ("nccl_without_gpus_job", T + "torch: {backend: nccl}\n", "torch.backend = nccl", "scaling.use_gpu=true"),
    ("python_file_as_job", "PY", "job.py", "this is a Python file"),
    ("train_two_args", "train: funcs.py:g\n", "key train = funcs.py:g", "2 required arguments (a, b)"),
]


def _write_job(tmp_path, text):
    (tmp_path / "funcs.py").write_text(FUNCS_PY + "def g(a, b):\n    pass\n")
    if text == "FIFO":
        os.mkfifo(tmp_path / "job.yaml")
        return str(tmp_path / "job.yaml")
    if isinstance(text, str) and text.startswith("/dev/"):
        return text
    if text == "PY":
        (tmp_path / "job.py").write_text('"""A train script."""\nimport os\ndef f(config):\n    pass\n')
        return str(tmp_path / "job.py")
    path = tmp_path / "job.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return str(path)


@pytest.mark.parametrize("row", JOBS, ids=[r[0] for r in JOBS])
def test_bad_job_file_is_refused_quickly_with_one_error(row, storage, tmp_path):
    _id, text, place, value = row
    path = _write_job(tmp_path, text)
    before = snapshot(tmp_path)
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_job(path, [f"run.storage_path={storage}"] if "storage_path" not in str(text) else [])
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < 2.0, f"{elapsed:.2f} s"  # bombs and special files included: nothing hangs or walks 10^9 nodes
    assert place in message, message
    assert value in message, message
    assert message.startswith("invalid job: ") and "  fix: " in message, message
    assert snapshot(tmp_path) == before


# Job files whose storage is checked when the run starts (in-process ``rafter run``): exit 2, one error.
RUN_JOBS = [
    ("storage_unknown_scheme", T + "run:\n  storage_path: s4://bucket/x\n", "run.storage_path = s4://bucket/x",
     "'s4'"),
    ("storage_is_a_file", T + "run:\n  storage_path: results/old_run/notes.txt\n",
     "run.storage_path = results/old_run/notes.txt", "is a file, not a folder"),
    ("storage_scheme_typo", T + "run:\n  storage_path: gs:/bucket/x\n", "run.storage_path = gs:/bucket/x",
     "gs://bucket/x"),
]


@pytest.mark.parametrize("row", RUN_JOBS, ids=[r[0] for r in RUN_JOBS])
def test_bad_storage_in_a_job_is_one_job_error_at_run_start(row, storage, tmp_path, capsys):
    from rafter._cli import main

    _id, text, place, value = row
    path = _write_job(tmp_path, text)
    before = snapshot(tmp_path)
    code = main(["run", path, "--set", "cluster=local", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("rafter: invalid job") == 1, err
    assert place in err and value in err, err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_yaml_numbers_are_read_as_yaml_1_2_reads_them(tmp_path):
    path = _write_job(tmp_path, T + "train_loop_config: {lr: 1e-3, wd: 5E-4, big: 1e3, quoted: '1e-3', old: 1.0e-3, "
                                    "padded: 010, time: 1:30, hex: 0x10}\n")
    config = load_job(path, ["train_loop_config.momentum=9e-1"], load_train=False).values["train_loop_config"]
    assert config == {"lr": 0.001, "wd": 0.0005, "big": 1000.0, "quoted": "1e-3", "old": 0.001, "padded": 10,
                      "time": "1:30", "hex": 16, "momentum": 0.9}


def test_env_var_expansion_reads_exponent_floats(tmp_path, monkeypatch):
    monkeypatch.setenv("RAFTER_TEST_LR", "3e-4")
    path = _write_job(tmp_path, T + "train_loop_config: {lr: '${RAFTER_TEST_LR}'}\n")
    assert load_job(path, load_train=False).values["train_loop_config"]["lr"] == 3e-4


def test_aliases_within_the_bound_still_work_and_a_set_flag_changes_one_copy(tmp_path):
    path = _write_job(tmp_path, T + "train_loop_config:\n  base: &b {lr: 0.1, layers: [1, 2]}\n  copy: *b\n")
    config = load_job(path, load_train=False).values["train_loop_config"]
    assert config["copy"] == config["base"] == {"lr": 0.1, "layers": [1, 2]}
    config = load_job(path, ["train_loop_config.copy.lr=0.5"], load_train=False).values["train_loop_config"]
    assert (config["base"]["lr"], config["copy"]["lr"]) == (0.1, 0.5)


@pytest.mark.parametrize("flag, fragment", [
    ("train_loop_config.x=&a [*a]", "alias refers to a mapping or list that contains it"),
    ("train_loop_config.x=" + "[" * 200 + "]" * 200, f"more than {MAX_DEPTH} levels deep"),
    ("train_loop_config.x." + ".".join(["a"] * 3000) + "=1", f"a job nests at most {MAX_DEPTH}"),
])
def test_a_set_flag_is_read_with_the_same_bounds(flag, fragment, tmp_path):
    path = _write_job(tmp_path, T)
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_job(path, [flag], load_train=False)
    assert time.monotonic() - start < 2.0
    assert fragment in str(info.value) and "--set train_loop_config.x" in str(info.value), str(info.value)


def test_settings_a_local_run_ignores_warn(caplog):
    from rafter._backends.local.backend import LocalBackend

    with pytest.warns(UserWarning, match=r"cluster_address='ray://head:10001'\) is ignored with cluster='local'") as w:
        RunConfig(cluster="local", cluster_address="ray://head:10001")
    assert w[0].filename == __file__
    LocalBackend().check_resources(ScalingConfig(accelerator_type="A100", placement_strategy="SPREAD"))
    said = [r.getMessage() for r in caplog.records if "ignored by the local backend" in r.getMessage()]
    assert said == ["ScalingConfig(accelerator_type='A100', placement_strategy='SPREAD') is ignored by the local "
                    "backend (all workers run on this machine); it applies on a Ray cluster: RunConfig(cluster='ray')."]


def test_config_errors_survive_pickling_with_their_type_and_fields():
    import pickle

    for call in (lambda: RunConfig(failure_config=3), lambda: ScalingConfig(resources_per_worker={"GPU": 1})):
        with pytest.raises(ConfigValueError) as info:
            call()
        back = pickle.loads(pickle.dumps(info.value))
        assert type(back) is type(info.value) and str(back) == str(info.value)
        assert (back.config, back.field, back.refs) == (info.value.config, info.value.field, info.value.refs)


@pytest.mark.parametrize("name, says", [("old_run", 'no "format" key'), ("corrupt", "is not valid JSON")])
def test_a_foreign_or_corrupt_state_file_is_one_error_naming_it_and_left_as_it_was(name, says, storage):
    state = os.path.join(storage, name, "rafter_run.json")
    before = open(state).read()
    with pytest.raises(IncompatibleRunError) as info:
        TorchTrainer(one_arg, run_config=RunConfig(name=name, storage_path=storage)).fit()
    assert f"{state} {'is not a rafter state file' if name == 'old_run' else ''}".strip() in str(info.value)
    assert says in str(info.value) and "Fix: move that folder away" in str(info.value)
    assert open(state).read() == before


def test_env_expansion_visits_a_node_shared_by_aliases_once(tmp_path, monkeypatch):
    from rafter._cli import overrides

    monkeypatch.setenv("RAFTER_TEST_DIM", "64")
    calls = []
    real = overrides.expand_env
    monkeypatch.setattr(overrides, "expand_env", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    inner = "'${RAFTER_TEST_DIM}'"
    levels = "".join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10) if i else inner}]\n"
                     for i in range(5))  # 10^4 copies of the innermost list once expanded
    path = _write_job(tmp_path, T + "train_loop_config:\n" + levels)
    config = load_job(path, load_train=False).values["train_loop_config"]
    assert config["l4"][3][2][1][0] == [64] and config["l1"][9] is config["l0"]  # expanded, and still shared
    assert len(calls) < 200, len(calls)  # the file's nodes (about 50), not the 11,111 of its expansion
