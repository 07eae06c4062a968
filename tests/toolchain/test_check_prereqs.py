"""toolchain/check-prereqs.sh: one clear line per missing or too-old prerequisite, exit 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "toolchain" / "check-prereqs.sh"

# Answers check-prereqs.sh's two probes the way a Python 3.9 interpreter would.
FAKE_PYTHON_39 = """#!/bin/sh
case "$2" in
  *print*) echo 3.9.18 ;;
  *) exit 1 ;;
esac
"""


def run_check(python: str, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", str(SCRIPT), python], capture_output=True, text=True, timeout=30, env={**os.environ, "PATH": path}
    )


@pytest.fixture
def bin_without_node(tmp_path) -> Path:
    """A PATH directory holding no node/npm at all."""
    empty = tmp_path / "bin-without-node"
    empty.mkdir()
    return empty


def test_check__all_present__silent_success():
    result = run_check(sys.executable, os.environ["PATH"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_check__python_too_old__one_line_naming_version_and_fix(tmp_path):
    fake = tmp_path / "python3.9"
    fake.write_text(FAKE_PYTHON_39)
    fake.chmod(0o755)
    assert shutil.which("node"), "this test needs node on PATH (only python should be wrong)"
    result = run_check(str(fake), os.environ["PATH"])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: Python 3.9.18 is too old: install Python 3.11 or newer (or run make PYTHON=/path/to/python3.11)"
    ]


def test_check__node_missing__one_line_saying_install_node(bin_without_node):
    result = run_check(sys.executable, str(bin_without_node))
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: Node.js not found: install Node.js 18 or newer (with npm)"]


def test_check__python_missing__one_line_saying_install_python(bin_without_node):
    result = run_check("python3", str(bin_without_node))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2  # python and node are both absent from this PATH: one line each
    assert lines[0].startswith("error: python3 not found: install Python 3.11 or newer")


def test_check__python_that_does_not_run__one_line_saying_so(tmp_path):
    broken = tmp_path / "python3"
    broken.write_text("#!/bin/sh\necho 'pyenv: python3: command not found' >&2\nexit 127\n")
    broken.chmod(0o755)
    result = run_check(str(broken), os.environ["PATH"])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {broken} does not run: install Python 3.11 or newer (or run make PYTHON=/path/to/python3.11)"
    ]
