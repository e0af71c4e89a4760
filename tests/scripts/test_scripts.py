"""The README's two commands, the quality gate and CI: the scripts parse, and installs are skipped when nothing changed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPTS = ["scripts/run.sh", "scripts/test.sh", "scripts/check.sh", "scripts/lib.sh", ".ci/run"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_script_is_valid_bash(script):
    result = subprocess.run(["bash", "-n", ROOT / script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", ["scripts/run.sh", "scripts/test.sh", "scripts/check.sh", ".ci/run"])
def test_the_entry_points_are_executable(script):
    assert os.access(ROOT / script, os.X_OK)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("target", "script"), [("run", "scripts/run.sh"), ("test", "scripts/test.sh"), ("check", "scripts/check.sh")]
)
def test_make_targets_call_the_scripts(target, script):
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == script


def test_ci_runs_the_quality_gate_before_the_tests():
    commands = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert "make check" in commands and "make test" in commands
    assert commands.index("make check") < commands.index("make test")


def ensure_venv(workdir: Path) -> None:
    subprocess.run(["bash", "-c", ". ./lib.sh && ensure_venv"], cwd=workdir, check=True, capture_output=True)


def test_requirements_are_installed_again_only_when_requirements_txt_changes(tmp_path):
    shutil.copy(ROOT / "scripts/lib.sh", tmp_path / "lib.sh")
    (tmp_path / "requirements.txt").write_text("Django==5.2.19\n")
    # A stand-in virtual environment whose python records what it was asked to do.
    python = tmp_path / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n')
    python.chmod(0o755)
    calls = tmp_path / "calls"

    ensure_venv(tmp_path)
    ensure_venv(tmp_path)
    assert calls.read_text().count("pip install") == 1
    assert "-r requirements.txt" in calls.read_text()

    (tmp_path / "requirements.txt").write_text("Django==5.2.19\ncelery==5.7.0\n")
    ensure_venv(tmp_path)
    assert calls.read_text().count("pip install") == 2


def test_a_failed_install_is_retried_next_time(tmp_path):
    shutil.copy(ROOT / "scripts/lib.sh", tmp_path / "lib.sh")
    (tmp_path / "requirements.txt").write_text("Django==5.2.19\n")
    python = tmp_path / ".venv/bin/python"
    python.parent.mkdir(parents=True)
    # It passes the interpreter check (scripts/lib.sh) and fails only the install.
    python.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n[ "$1 $2" != "-m pip" ]\n')
    python.chmod(0o755)
    with pytest.raises(subprocess.CalledProcessError):
        ensure_venv(tmp_path)
    assert "pip install" in (tmp_path / "calls").read_text()
    assert not (tmp_path / ".venv/.requirements.sha256").exists()
