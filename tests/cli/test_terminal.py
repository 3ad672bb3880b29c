"""On a real terminal (a pseudo-terminal here): the rich live display, and plain lines when rich is missing."""

import os
import pty
import select
import subprocess
import sys
import time

from tests.cli.conftest import FUNCS


def run_on_terminal(args, env, timeout=120):
    """Run ``python -m rafter ARGS`` with stdout and stderr on a pseudo-terminal; returns (exit code, output)."""
    master, slave = pty.openpty()
    full_env = dict(os.environ, OMP_NUM_THREADS="1", TERM="xterm-256color", COLUMNS="120", **env)
    full_env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "rafter", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=full_env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal has closed it
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait(timeout=30)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def job(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"train: {FUNCS}:steps\ncluster: local\nscaling: {{num_workers: 2}}\n"
                    f"run: {{storage_path: {tmp_path}, name: {name}}}\n")
    return path


def test_live_display_on_a_terminal(tmp_path):
    code, out = run_on_terminal(["run", job(tmp_path, "live")], env={})
    assert code == 0, out
    assert "\x1b[" in out  # drawn with terminal control codes
    assert "attempt 1 · 2 workers" in out and "elapsed" in out
    assert "[rafter] report" not in out  # the table, not plain lines
    assert "✓ finished in" in out and "10 reports, 1 attempt" in out
    assert f"results:      {tmp_path / 'live'}" in out


def test_plain_lines_on_a_terminal_without_rich(tmp_path):
    hidden = tmp_path / "no_rich" / "rich"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('rich is hidden for this test')\n")
    code, out = run_on_terminal(["run", job(tmp_path, "plain"), "--progress-every", "0"],
                                env={"PYTHONPATH": os.pathsep.join(
                                        filter(None, [str(tmp_path / "no_rich"), os.environ.get("PYTHONPATH")]))})
    assert code == 0, out
    assert "[rafter] attempt 1: starting 2 workers" in out
    assert "[rafter] report 10 (attempt 1" in out
    assert "✓ finished in" in out
