"""The built wheel: its name on the package index, what it pulls in, and the `rafter` command it installs.

The wheel is built offline from a copy of the sources (pip wheel --no-build-isolation, with this
interpreter's setuptools); the dependency check asks the package registry only, through pip's resolver.
"""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rafter

ROOT = Path(__file__).resolve().parents[1]
DIST_NAME = "rafter-train"
# Heavy packages the user install must not pull in (they belong to Ray, the trackers or the tests).
NOT_IN_USER_INSTALL = {"pydantic", "pyarrow", "pandas"}


def _run(cmd, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources, so the build leaves nothing in the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    project = tmp / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp / "dist", project])
    wheels = list((tmp / "dist").glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {tmp / 'dist'}, found {wheels}"
    return wheels[0]


def test_wheel_metadata_names_this_library(wheel):
    assert wheel.name == f"rafter_train-{rafter.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = f"rafter_train-{rafter.__version__}.dist-info"
        meta = email.message_from_string(zf.read(f"{info}/METADATA").decode())
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == DIST_NAME
    assert meta["Version"] == rafter.__version__
    assert "torch>=2.4" in meta.get_all("Requires-Dist")
    extras = set(meta.get_all("Provides-Extra"))
    assert {"cli", "examples", "gcs", "ray", "s3", "trackers"} <= extras, sorted(extras)
    assert "rafter = rafter._cli:main" in entry_points
    top_level = sorted({n.split("/")[0] for n in names})
    assert top_level == sorted([info, "rafter"])
    assert "rafter/_cli/completion.py" in names and "rafter/train/torch/__init__.py" in names


def test_user_install_pulls_no_heavy_packages(wheel, tmp_path):
    """pip's resolver on the wheel with its cli extra, torch pinned as in the README: what would be installed."""
    report = tmp_path / "report.json"
    _run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
          "--report", report, "-c", ROOT / "constraints-dev.txt", f"{wheel}[cli]"])
    installed = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                 for item in json.loads(report.read_text())["install"]}
    assert installed.get(DIST_NAME) == rafter.__version__, sorted(installed)
    assert installed.get("torch", "").startswith("2.13.0"), installed.get("torch")
    assert {"rich", "shtab"} <= set(installed), sorted(installed)
    heavy = sorted(NOT_IN_USER_INSTALL & set(installed))
    assert heavy == [], f"the user install would pull {heavy}; all it would install: {sorted(installed)}"


def test_installed_command_reports_its_version_and_explains_a_missing_shtab(wheel, tmp_path):
    """`rafter --version` from the wheel's console script, in a venv with nothing else (no torch needed)."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet",
          "--no-deps", "--no-index", wheel])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed copy, not src/
    version = _run([venv / "bin" / "rafter", "--version"], env=env)
    assert version.stdout == f"rafter {rafter.__version__}\n"
    assert _run([venv / "bin" / "python", "-m", "rafter", "--version"], env=env).stdout == version.stdout
    where = _run([venv / "bin" / "python", "-c", "import rafter; print(rafter.__file__)"], env=env).stdout
    assert where.startswith(str(venv)), where
    proc = subprocess.run([venv / "bin" / "rafter", "completion", "bash"], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "pip install shtab" in proc.stderr and "rafter-train[cli]" in proc.stderr, proc.stderr


def test_readme_names_the_wheel_that_is_built_and_extras_it_has(wheel):
    readme = (ROOT / "README.md").read_text()
    assert f"dist/{wheel.name}" in readme, f"README.md's install-from-a-wheel line should name dist/{wheel.name}"
    with zipfile.ZipFile(wheel) as zf:
        meta = email.message_from_string(zf.read(f"rafter_train-{rafter.__version__}.dist-info/METADATA").decode())
    table = readme[readme.index("| extra | adds | for |"):].split("\n\n")[0]
    named = set(re.findall(r"^\| `([\w-]+)` \|", table, flags=re.M))
    assert len(named) >= 6 and named <= set(meta.get_all("Provides-Extra")), (sorted(named), meta.get_all("Provides-Extra"))


def _make_dry_run(target, tmp_path, *variables):
    """The commands `make TARGET` would run in a fresh clone (no .venv yet)."""
    clone = tmp_path / "clone"
    clone.mkdir(exist_ok=True)
    for name in ("Makefile", "pyproject.toml", "constraints-dev.txt"):
        shutil.copy(ROOT / name, clone / name)
    return _run(["make", "-n", "-C", clone, target, *variables]).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_quickstart_installs_the_user_install_only_and_make_test_adds_the_dev_extra(tmp_path):
    quickstart = [line for line in _make_dry_run("quickstart", tmp_path).splitlines() if "pip install" in line]
    assert len(quickstart) == 1 and quickstart[0].endswith('-c constraints-dev.txt -e ".[cli]"'), quickstart
    test = _make_dry_run("test", tmp_path)
    assert '-e ".[cli,data,dev,ray]"' in test and "pytest" in test, test
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_quickstart_can_take_torch_from_a_pytorch_index(tmp_path):
    index = "https://download.pytorch.org/whl/cpu"
    lines = [line for line in _make_dry_run("quickstart", tmp_path, f"TORCH_INDEX={index}").splitlines()
             if "pip install" in line]
    assert len(lines) == 2 and lines[0].endswith(f"-c constraints-dev.txt torch --index-url {index}"), lines
