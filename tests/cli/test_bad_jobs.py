"""Every bad job gets one error before anything starts: the key path, the value, the problem, the fix; exit 2."""

import pytest

from tests.cli.conftest import rafter

FUNCS_PY = '''
from rafter import train
NOT_A_FUNCTION = 3
def steps(config):
    train.report({"step": 0})
def two_args(a, b):
    pass
'''
T = "train: funcs.py:steps\n"

# (id, job file text or None for no file, extra files, extra args, fragments expected on stderr)
CASES = [
    ("missing_file", None, {}, [], ["no such file", "job.yaml"]),
    ("folder_not_file", "DIR", {}, [], ["is a folder"]),
    ("not_yaml", T + "scaling: {num_workers: 2\n", {}, [], ["not valid YAML", "line"]),
    ("tabs_not_yaml", T + "scaling:\n\tnum_workers: 2\n", {}, [], ["not valid YAML", "tabs"]),
    ("top_level_list", "- a\n- b\n", {}, [], ["a list", "a job file is a mapping"]),
    ("empty_file", "", {}, [], ["the file is empty", "train: train.py:train_func"]),
    ("duplicate_key", T + "scaling: {num_workers: 2}\nscaling: {num_workers: 3}\n", {}, [], ["'scaling' appears twice"]),
    ("unknown_top_key", T + "scalling:\n  num_workers: 2\n", {}, [], ["key scalling", "did you mean scaling?"]),
    ("unknown_nested_key", T + "scaling:\n  num_worker: 2\n", {}, [],
     ["key scaling.num_worker", "did you mean scaling.num_workers?", "num_workers: 2"]),
    ("misplaced_key", T + "num_workers: 2\n", {}, [], ["did you mean scaling.num_workers?"]),
    ("python_api_name", "train_loop_per_worker: funcs.py:steps\n", {}, [], ["did you mean train?"]),
    ("missing_train", "scaling:\n  num_workers: 2\n", {}, [], ["no 'train' key", "train: train.py:train_func"]),
    ("train_not_string", "train: 5\n", {}, [], ["key train = 5", "expected a string"]),
    ("train_without_colon", "train: funcs.py\n", {}, [], ["key train = funcs.py", "separated by a colon"]),
    ("train_file_missing", "train: nothere.py:f\n", {}, [], ["nothere.py does not exist"]),
    ("train_import_error", "train: broken.py:f\n", {"broken.py": "import not_a_module_xyz\n"}, [],
     ["ModuleNotFoundError", "not_a_module_xyz", "pip install not_a_module_xyz"]),
    ("train_syntax_error", "train: syntax.py:f\n", {"syntax.py": "def f(:\n    pass\n"}, [],
     ["SyntaxError", "syntax.py:1"]),
    ("train_raises_at_import", "train: raises.py:f\n", {"raises.py": "raise RuntimeError('boom at import')\n"}, [],
     ["RuntimeError: boom at import", "raises.py:1"]),
    ("train_missing_function", "train: funcs.py:step\n", {}, [], ["no attribute 'step'", "did you mean 'steps'?"]),
    ("train_not_callable", "train: funcs.py:NOT_A_FUNCTION\n", {}, [], ["is a int, not a function"]),
    ("train_two_arguments", "train: funcs.py:two_args\n", {}, [], ["2 required arguments (a, b)"]),
    ("train_module_not_found", "train: no_such_pkg_xyz.mod:f\n", {}, [], ["no module named 'no_such_pkg_xyz'"]),
    ("num_workers_word", T + "scaling:\n  num_workers: four\n", {}, [],
     ["scaling.num_workers = four", "expected an integer, or an elastic range [min, max], got the string 'four'"]),
    ("num_workers_quoted", T + "scaling:\n  num_workers: '4'\n", {}, [], ["remove the quotes"]),
    ("num_workers_negative", T + "scaling:\n  num_workers: -1\n", {}, [],
     ["scaling.num_workers = -1", "num_workers must be a positive int", "scaling.num_workers=4"]),
    ("num_workers_bool", T + "scaling:\n  num_workers: true\n", {}, [], ["expected an integer, or an elastic range [min, max], got the boolean true"]),
    ("num_workers_range_of_three", T + "scaling:\n  num_workers: [1, 2, 3]\n", {}, [],
     ["expected an integer, or an elastic range [min, max]"]),
    ("num_workers_range_reversed", T + "scaling:\n  num_workers: [4, 2]\n", {}, [],
     ["scaling.num_workers = [4, 2]", "(min, max) with 1 <= min <= max"]),
    ("num_workers_null", T + "scaling:\n  num_workers: null\n", {}, [], ["can't be empty", "default, 1"]),
    ("use_gpu_word", T + "scaling:\n  use_gpu: maybe\n", {}, [], ["scaling.use_gpu = maybe", "true or false"]),
    ("resources_list", T + "scaling:\n  resources_per_worker: [1, 2]\n", {}, [], ["expected a mapping of resource"]),
    ("resources_negative", T + "scaling:\n  resources_per_worker: {CPU: -1}\n", {}, [],
     ["scaling.resources_per_worker = {CPU: -1}", "a number >= 0"]),
    ("resources_word", T + "scaling:\n  resources_per_worker: {CPU: two}\n", {}, [],
     ["scaling.resources_per_worker.CPU = two", "expected a number for the amount of CPU"]),
    ("gpu_without_use_gpu", T + "scaling:\n  resources_per_worker: {GPU: 1}\n", {}, [],
     ["scaling.use_gpu=false", "set scaling.use_gpu=true"]),
    ("placement_typo", T + "scaling:\n  placement_strategy: PAKC\n", {}, [], ["did you mean 'PACK'?"]),
    ("memory_threshold_range", T + "run:\n  memory_threshold: 1.5\n", {}, [],
     ["run.memory_threshold = 1.5", "expected a fraction in (0, 1]"]),
    ("hang_timeout_negative", T + "run:\n  hang_timeout_s: -1\n", {}, [], ["run.hang_timeout_s = -1", "> 0"]),
    ("run_name_slash", T + "run:\n  name: a/b\n", {}, [], ["run.name = a/b", "without '/'"]),
    ("max_failures_range", T + "failure:\n  max_failures: -2\n", {}, [],
     ["failure.max_failures = -2", "-1 for unlimited"]),
    ("num_to_keep_zero", T + "checkpoint:\n  num_to_keep: 0\n", {}, [], ["checkpoint.num_to_keep = 0", ">= 1"]),
    ("score_order_typo", T + "checkpoint:\n  checkpoint_score_order: maximum\n", {}, [], ["did you mean 'max'?"]),
    ("torch_backend", T + "torch:\n  backend: mpi\n", {}, [], ["torch.backend = mpi", "gloo, nccl"]),
    ("torch_timeout_zero", T + "torch:\n  timeout_s: 0\n", {}, [],
     ["torch.timeout_s = 0", "expected a number of seconds > 0"]),
    ("cluster_unknown", T + "cluster: kubernetes\n", {}, [], ["cluster = kubernetes", "auto, local, ray"]),
    ("env_var_unset", T + "run:\n  name: ${RAFTER_TEST_SURELY_UNSET}\n", {}, [],
     ["RAFTER_TEST_SURELY_UNSET is not set", "${RAFTER_TEST_SURELY_UNSET:-<value>}"]),
    ("config_not_mapping", T + "train_loop_config: 3\n", {}, [], ["train_loop_config = 3", "expected a mapping"]),
    ("section_not_mapping", T + "scaling: 4\n", {}, [], ["scaling must be a mapping"]),
    ("custom_resource_on_local", T + "cluster: local\nscaling:\n  resources_per_worker: {TPU: 1}\n", {}, [],
     ["scaling.resources_per_worker", "'TPU'", "cluster: ray"]),
    ("too_many_gpus_on_local", T + "cluster: local\nscaling:\n  num_workers: 512\n  use_gpu: true\n", {}, [],
     ["asks for 512 GPUs", "scaling.num_workers"]),
    ("callback_typo", T + "run:\n  callbacks: [tensorbord]\n", {}, [],
     ["run.callbacks[0]", "did you mean 'tensorboard'?"]),
    ("set_unknown_key", T, {}, ["--set", "scaling.num_worker=2"],
     ["--set scaling.num_worker=2", "did you mean scaling.num_workers?", "fix: --set scaling.num_workers=2"]),
    ("set_without_value", T, {}, ["--set", "scaling.num_workers"], ["KEY=VALUE"]),
    ("set_out_of_range", T, {}, ["--set", "scaling.num_workers=-1"],
     ["--set scaling.num_workers=-1", "positive int", "fix: --set scaling.num_workers=4"]),
]


def run_in_process(args, cwd, home, capsys, monkeypatch):
    """``rafter ARGS`` run by ``main()`` in this interpreter: (exit code, stdout, stderr)."""
    from rafter._cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", home["HOME"])
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _setup(case, tmp_path, write):
    name, text, files, extra, fragments = case
    write("funcs.py", FUNCS_PY)
    for file_name, content in files.items():
        write(file_name, content)
    if text == "DIR":
        (tmp_path / "job.yaml").mkdir()
    elif text is not None:
        write("job.yaml", text)
    return extra, fragments


def _assert_one_job_error(code, out, err, fragments, tmp_path):
    assert code == 2, (out, err)
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert err.count("rafter: invalid job") == 1, err  # one error, said once
    assert "fix:" in err, err
    assert "Traceback" not in err, err
    assert out == ""
    assert not (tmp_path / "home" / "rafter_results").exists()  # nothing started


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_job_fails_before_anything_starts(case, tmp_path, write, home, capsys, monkeypatch):
    extra, fragments = _setup(case, tmp_path, write)
    code, out, err = run_in_process(["run", "job.yaml", *extra], tmp_path, home, capsys, monkeypatch)
    _assert_one_job_error(code, out, err, fragments, tmp_path)


# The same, through a real ``python -m rafter`` for a few: the exit code and stderr of the real command.
SUBPROCESS_CASES = [c for c in CASES if c[0] in ("missing_file", "train_import_error", "num_workers_zero")]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_bad_job_exit_code_from_the_real_command(case, tmp_path, write, home):
    extra, fragments = _setup(case, tmp_path, write)
    proc = rafter("run", "job.yaml", *extra, cwd=tmp_path, env=home)
    _assert_one_job_error(proc.returncode, proc.stdout, proc.stderr, fragments, tmp_path)


def test_check_reports_a_bad_file_with_exit_code_2(tmp_path, write, home):
    write("job.yaml", "train: funcs.py:steps\nscaling:\n  num_workers: -1\n")
    write("funcs.py", FUNCS_PY)
    proc = rafter("check", "job.yaml", cwd=tmp_path, env=home)
    assert proc.returncode == 2
    assert "✗ job file" in proc.stdout and "scaling.num_workers = -1" in proc.stdout
