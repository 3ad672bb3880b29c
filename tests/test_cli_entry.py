"""The `rafter` command's front door: --version and shell completion scripts that work in a real shell."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import rafter


def _rafter(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "rafter", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, **kwargs)


def test_python_m_rafter_version():
    proc = _rafter("--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"rafter {rafter.__version__}\n", "")


def _bash_completions(script_path, words, cwd=None):
    """What bash offers after `words` (the last one being typed), using the completion script at script_path."""
    words_literal = " ".join(f"'{w}'" for w in words)
    probe = (f"source '{script_path}'\n"
             "complete -p rafter\n"
             f"COMP_WORDS=({words_literal}); COMP_CWORD={len(words) - 1}\n"
             "_shtab_rafter\n"
             "printf 'reply:%s\\n' \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", probe], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    return lines[0], sorted(line[len("reply:"):] for line in lines[1:] if line.startswith("reply:"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_script_completes_commands_options_and_files(tmp_path):
    pytest.importorskip("shtab")
    proc = _rafter("completion", "bash")
    assert proc.returncode == 0, proc.stderr
    script = tmp_path / "rafter.bash"
    script.write_text(proc.stdout)

    registered, commands = _bash_completions(script, ["rafter", ""])
    assert registered.startswith("complete ") and registered.endswith(" -F _shtab_rafter rafter"), registered
    assert commands == ["check", "completion", "results", "run"]
    assert _bash_completions(script, ["rafter", "r"])[1] == ["results", "run"]
    assert "--print-config" in _bash_completions(script, ["rafter", "run", "--p"])[1]
    assert _bash_completions(script, ["rafter", "completion", ""])[1] == ["bash", "tcsh", "zsh"]

    (tmp_path / "job.yaml").write_text("train: f.py:f\n")
    assert _bash_completions(script, ["rafter", "run", "jo"], cwd=tmp_path)[1] == ["job.yaml"]


def test_zsh_completion_script(tmp_path):
    pytest.importorskip("shtab")
    proc = _rafter("completion", "zsh")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("#compdef rafter")
    assert "completion" in proc.stdout and "--print-config" in proc.stdout
    if shutil.which("zsh"):  # as the README says: the script saved as _rafter in a folder on $fpath
        (tmp_path / "_rafter").write_text(proc.stdout)
        check = subprocess.run(["zsh", "-n", str(tmp_path / "_rafter")], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        probe = f"fpath=('{tmp_path}' $fpath); autoload -Uz compinit; compinit -u -d '{tmp_path}/zcompdump'; " \
                "print -r -- ${_comps[rafter]}"
        check = subprocess.run(["zsh", "-f", "-c", probe], capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
        assert (check.returncode, check.stdout) == (0, "_rafter\n"), check.stderr


def test_completion_without_shtab_says_how_to_get_it():
    code = ("import sys; sys.modules['shtab'] = None\n"  # makes `import shtab` raise ImportError
            "from rafter._cli import main; sys.exit(main(['completion', 'bash']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "pip install shtab" in proc.stderr and "pip install 'rafter-train[cli]'" in proc.stderr, proc.stderr
