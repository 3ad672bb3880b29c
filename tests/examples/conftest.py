import importlib
import os
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Examples must never download: make any Hugging Face hub access fail instead."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def example(monkeypatch):
    """Import ``examples/<name>.py`` as a module (its train function then pickles by reference)."""
    monkeypatch.syspath_prepend(EXAMPLES)

    def load(name):
        return importlib.import_module(name)

    return load


@pytest.fixture
def run_script(tmp_path):
    """Run ``python examples/<name>.py args...`` as users do, with HOME in tmp_path; returns stdout."""
    import subprocess

    def run(name, *args, timeout=120):
        env = dict(os.environ, HOME=str(tmp_path), PYTHONUNBUFFERED="1")
        proc = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, name + ".py"), *args], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=timeout,
        )
        assert proc.returncode == 0, f"{name}.py exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc.stdout

    return run
