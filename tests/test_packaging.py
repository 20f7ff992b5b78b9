"""Packaging: one version, a light library, a working command."""

import subprocess
import sys
from importlib.metadata import version

import selfinv


def test_one_version_source():
    assert version("selfinv") == selfinv.__version__


def test_the_library_imports_without_the_engine_or_plotting():
    """physics, losses, models, transforms and theory drop into anyone's training loop: importing them
    loads neither Lightning nor matplotlib (nor a general-purpose argument parser)."""
    code = ("import sys; import selfinv.physics, selfinv.losses, selfinv.models, selfinv.transforms, "
            "selfinv.theory; heavy = [m for m in ('lightning', 'pytorch_lightning', 'lightning_fabric', "
            "'matplotlib', 'jsonargparse') if m in sys.modules]; print(heavy); assert not heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_command_is_installed_and_answers():
    r = subprocess.run([sys.executable, "-m", "selfinv", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "selfinv fit" in r.stdout
