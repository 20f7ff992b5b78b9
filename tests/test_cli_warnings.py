"""Warnings of the ``selfinv`` command: one clean line each, not Python's file:line form (``selfinv.cli``)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np

from selfinv.cli import _warning_line, main


class _SomeWarning(UserWarning):
    pass


def test_warning_line_drops_the_path_and_the_source_line():
    fmt = _warning_line("predict")
    assert fmt("sky: 12 blank\n  pixels", UserWarning, "/x/selfinv/predict.py", 125, "source()") == \
        "selfinv predict: warning: sky: 12 blank pixels\n"
    assert fmt(_SomeWarning("noise"), _SomeWarning, "/x/y.py", 1) == "selfinv predict: warning: _SomeWarning: noise\n"


def test_main_restores_the_library_format(tmp_path):
    """The one-line format is the command's only: selfinv used as a library warns as Python (or Lightning, once
    imported) does."""
    import lightning.fabric.utilities.warnings  # noqa: F401 - installs Lightning's format, as main imports it

    before = warnings.formatwarning
    assert main(["predict", "--checkpoint", str(tmp_path / "none.ckpt"), "--input", str(tmp_path),
                 "--output", str(tmp_path / "out")]) == 2
    assert warnings.formatwarning is before


def test_cli_warning_is_one_line_without_file_or_source(tmp_path):
    """``selfinv fit`` on a FITS image with blank (NaN) pixels warns about them: as one ``selfinv fit: warning:``
    line, with neither the file path of the code that warned nor its source line."""
    from astropy.io import fits

    img = np.random.default_rng(0).normal(0.5, 0.1, (64, 64)).astype(np.float32)
    img[:, :6] = np.nan
    fits.PrimaryHDU(img).writeto(tmp_path / "blank.fits")
    (tmp_path / "n2v.yaml").write_text("data: {patch_size: 16, num_patches: 8, val_fraction: 0.25, batch_size: 2}\n"
                                       "physics: {name: denoising}\nlosses: [{name: splitting}]\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
    done = subprocess.run([sys.executable, "-m", "selfinv", "fit", "--config", str(tmp_path / "n2v.yaml"),
                           "--data.path", str(tmp_path / "blank.fits"), "--trainer.output_dir", str(tmp_path / "run"),
                           "--model.backbone.args", "{scales: 2, base_channels: 4, batch_norm: false}",
                           "--trainer.max_steps", "1", "--trainer.progress_bar", "false", "--trainer.figures",
                           "false"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "blank (NaN) pixel(s)" in line]
    assert lines and all(line.startswith("selfinv fit: warning: blank: 384 blank (NaN) pixel(s) of 4096")
                         for line in lines), done.stderr[-2000:]
    # Lightning's own warnings (installed over by the command) too: every warning is such a line
    warned = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert all(line.startswith("selfinv fit: warning: ") for line in warned), done.stderr[-2000:]
    assert not any(".py:" in line for line in done.stderr.splitlines()), done.stderr[-2000:]
