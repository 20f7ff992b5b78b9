"""The code stays clean: ruff (style, import order, zip(strict=), no module-level matplotlib in the library)
and mypy on the library's core packages, as configured in pyproject.toml."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff():
    r = _run(sys.executable, "-m", "ruff", "check", "selfinv", "tests", "benchmarks")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_on_physics_losses_transforms():
    r = _run(sys.executable, "-m", "mypy")
    assert r.returncode == 0, r.stdout + r.stderr
