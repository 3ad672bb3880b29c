"""``rafter run``: real runs as subprocesses; output, exit codes, --set, --print-config, --json, --quiet."""

import json
import sys

import cloudpickle
import subprocess
import yaml

from rafter.train import ScalingConfig
from rafter.train.torch import TorchTrainer
from tests.cli.conftest import EXAMPLES, FUNCS, rafter


def job_text(func="steps", extra=""):
    return f"train: {FUNCS}:{func}\ncluster: local\nscaling:\n  num_workers: 2\n{extra}"


def test_quickstart_yaml_matches_the_python_api(tmp_path, run_config):
    proc = rafter("run", EXAMPLES / "quickstart.yaml", "--json", "--set", f"run.storage_path={tmp_path / 'cli'}",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)

    sys.path.insert(0, str(EXAMPLES))
    try:
        import quickstart_func
    finally:
        sys.path.remove(str(EXAMPLES))
    api = TorchTrainer(
        quickstart_func.train_func,
        train_loop_config={"lr": 0.001, "steps": 10},
        scaling_config=ScalingConfig(num_workers=4, resources_per_worker={"CPU": 2}),
        run_config=run_config(name="api"),
    ).fit()
    assert set(cli["metrics"]) == set(api.metrics) == {"loss"}
    assert cli["num_reports"] == len(api.metrics_history) == 10
    assert cli["status"] == "finished" and cli["error"] is None
    assert cli["path"] == str(tmp_path / "cli" / "quickstart")
    with open(tmp_path / "cli" / "quickstart" / "metrics.jsonl") as f:
        assert len(f.read().splitlines()) == 10


def test_set_flags_override_the_file_and_env_defaults(tmp_path, write):
    job = write("job.yaml", job_text(extra="train_loop_config:\n  steps: ${RAFTER_TEST_STEPS:-5}\n"))
    proc = rafter("run", job, "--json", "--set", "scaling.num_workers=3", "--set", f"run.storage_path={tmp_path}",
                  "--set", "run.name=over", env={"RAFTER_TEST_STEPS": "4"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["metrics"]["world"] == 3  # --set beat the file's 2
    assert doc["num_reports"] == 4  # ${RAFTER_TEST_STEPS:-5} with the variable set
    assert doc["return_value"] == {"rank": 0, "steps": 4}


def test_print_config_names_the_source_of_each_value_and_round_trips(tmp_path, write):
    job = write("job.yaml", job_text(extra="train_loop_config:\n  lr: 0.1\n  steps: ${RAFTER_TEST_UNSET_STEPS:-7}\n"))
    proc = rafter("run", job, "--print-config", "--set", "scaling.num_workers=8", "--set", "train_loop_config.lr=0.5")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "defaults < job file < --set flags" in out
    lines = {line.split("#")[0].strip(): line.split("#", 1)[1].strip() for line in out.splitlines()
             if "#" in line and not line.startswith("#")}
    assert lines["num_workers: 8"] == "--set scaling.num_workers=8"
    assert lines["lr: 0.5"] == "--set train_loop_config.lr=0.5"
    assert lines["steps: 7"] == "job file"
    assert lines["use_gpu: false"] == "default"
    values = yaml.safe_load(out)
    assert values["scaling"]["num_workers"] == 8 and values["train_loop_config"] == {"lr": 0.5, "steps": 7}
    again = rafter("run", write("printed.yaml", out), "--print-config")
    assert again.returncode == 0, again.stderr
    assert yaml.safe_load(again.stdout) == values
    assert not (tmp_path / "rafter_results").exists()


def test_plain_progress_when_not_a_terminal(tmp_path, write):
    job = write("job.yaml", job_text(extra=f"run:\n  storage_path: {tmp_path}\n  name: plain\n"))
    proc = rafter("run", job, "--progress-every", "0")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\x1b[" not in out  # no terminal control codes in logs
    assert "[rank 0] stdout of rank 0" in out and "[rank 1] stdout of rank 1" in out
    assert f"[rafter] attempt 1: starting 2 workers; run folder {tmp_path / 'plain'}" in out
    for i in range(1, 11):
        assert f"[rafter] report {i} (attempt 1" in out
    assert "report 10 (attempt 1" in out and "step=9" in out
    assert "✓ finished in" in out and "10 reports, 1 attempt" in out
    assert f"results:      {tmp_path / 'plain'}" in out
    assert f"rafter results {tmp_path / 'plain'}" in out


def test_failed_run_exits_1_with_the_root_cause_in_json(tmp_path, write):
    job = write("job.yaml", job_text("fails_on_rank_1", f"run:\n  storage_path: {tmp_path}\n  name: bad\n"))
    proc = rafter("run", job, "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)  # stdout holds only the JSON, even with worker output
    assert doc["status"] == "failed"
    assert "rank 1" in doc["error"] and "ValueError" in doc["error"]
    assert doc["num_reports"] == 1 and doc["attempts"][0]["error"] == doc["error"]
    assert "rank 1 gives up on purpose" in proc.stderr
    assert "✗ failed" in proc.stderr


def test_quiet_prints_nothing_on_success_and_json_keeps_unjsonable_return_values_out(tmp_path, write):
    job = write("job.yaml", job_text("returns_object", f"run:\n  storage_path: {tmp_path}\n"))
    quiet = rafter("run", job, "--quiet", "--set", "run.name=q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == ""
    as_json = rafter("run", job, "--json", "--set", "run.name=j")
    doc = json.loads(as_json.stdout)
    assert doc["return_value"] is None and doc["return_value_repr"].startswith("<object object")


def test_file_function_is_loaded_without_its_main_block_and_can_import_its_neighbours(tmp_path, write):
    write("code/helper.py", "def double(x):\n    return 2 * x\n")
    write("code/train_here.py", (
        "from helper import double\n"
        "from rafter import train\n"
        "def train_func(config):\n"
        "    train.report({'value': double(config['x'])})\n"
        "    return double(config['x'])\n"
        "if __name__ == '__main__':\n"
        "    raise SystemExit('the __main__ block ran')\n"
    ))
    job = write("jobs/job.yaml", (
        "train: ../code/train_here.py:train_func\ncluster: local\ntrain_loop_config: {x: 21}\n"
        f"run: {{storage_path: {tmp_path}, name: neighbours}}\n"
    ))
    proc = rafter("run", job, "--json", cwd=tmp_path / "jobs")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["return_value"] == 42


def test_file_function_pickles_by_value_for_workers_that_cannot_import_it(tmp_path, write):
    from rafter._cli.loader import load_function

    path = write("elsewhere/only_here.py", "SCALE = 3\ndef f(config):\n    return SCALE * config['x']\n")
    fn = load_function(f"{path}:f", base_dirs=[str(tmp_path)], source="test")
    payload = cloudpickle.dumps(fn)
    out = subprocess.run(
        [sys.executable, "-c", "import sys, cloudpickle; print(cloudpickle.loads(sys.stdin.buffer.read())({'x': 5}))"],
        input=payload, capture_output=True, cwd="/", timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == b"15"


def test_package_module_form(tmp_path, write):
    write("mypkg/__init__.py", "")
    write("mypkg/jobs.py", "from rafter import train\ndef go():\n    train.report({'ok': 1})\n    return 'pkg'\n")
    write("job.yaml", f"train: mypkg.jobs:go\ncluster: local\nrun: {{storage_path: {tmp_path}, name: pkg}}\n")
    proc = rafter("run", "job.yaml", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["return_value"] == "pkg"


def test_progress_through_a_restart(tmp_path, write):
    job = write("job.yaml", job_text("fails_once", f"failure: {{max_failures: 1}}\n"
                                                   f"run: {{storage_path: {tmp_path}, name: restart}}\n"))
    proc = rafter("run", job)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "[rafter] attempt 1: starting 2 workers" in out
    assert "[rafter] attempt 1 failed after 1 report: " in out and "first attempt fails" in out
    assert "[rafter] attempt 2: starting 2 workers" in out
    assert "✓ finished in" in out and "2 reports, 2 attempts" in out
