"""The ``selfinv`` command: fit -> predict round trip, config errors, overrides, tiled prediction,
simulate."""

import numpy as np
import pytest
import torch

from selfinv.cli import main
from selfinv.config import ConfigError, parse_run_config
from selfinv.training.checkpoint import load_checkpoint

CONFIG = """
data: {patch_size: 16, num_patches: 20, batch_size: 4, val_fraction: 0.2, seed: 0}
physics: {name: denoising, noise: {name: gaussian, args: {sigma: 0.1}}}
model: {backbone: {name: unet, args: {scales: 2, base_channels: 4, batch_norm: false}}}
losses:
  - {name: sure, args: {divergence: mc}}
trainer: {max_steps: 6, progress_bar: false, accelerator: cpu, log_every_n_steps: 1}
"""


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(CONFIG)
    return p


def test_fit_then_predict_round_trip_with_tiling(tmp_path, config, capsys):
    out = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--trainer.output_dir", str(out)]) == 0
    for f in ("checkpoints/last.ckpt", "reconstruction.png", "loss_curves.png", "logs/metrics.csv"):
        assert (out / f).exists(), f
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 6
    assert ckpt["hyper_parameters"]["config"]["losses"][0]["name"] == "sure"

    # validate the saved checkpoint on the held-out measurements: the self-supervised loss is reported
    capsys.readouterr()
    assert main(["validate", "--config", str(config), "--trainer.output_dir", str(out),
                 "--checkpoint", str(out / "checkpoints" / "last.ckpt")]) == 0
    assert "val/loss" in capsys.readouterr().out

    # an image larger than the tile (40 x 52 with tile 16): tiled = whole-image prediction up to blending
    img = np.random.default_rng(0).random((40, 52)).astype(np.float32)
    np.save(tmp_path / "big.npy", img)
    common = ["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
              str(tmp_path / "big.npy"), "--format", "npy"]
    assert main(common + ["--output", str(tmp_path / "whole")]) == 0
    assert main(common + ["--output", str(tmp_path / "tiled"), "--tile", "16", "--overlap", "8"]) == 0
    whole = np.load(tmp_path / "whole" / "big.npy")
    tiled = np.load(tmp_path / "tiled" / "big.npy")
    assert whole.squeeze().shape == tiled.squeeze().shape == (40, 52)
    # a 2-scale U-Net sees ~+-6 px; with 8 px overlap the blended tiles differ from the whole-image
    # output only near tile cuts through zero-padding effects (measured max ~1e-1, mean ~1e-2)
    assert np.abs(whole - tiled).mean() < 0.05
    assert np.isfinite(tiled).all()


def test_override_of_a_list_entry_and_a_nested_field(config):
    cfg = parse_run_config(["--losses.0.name", "mc", "--trainer.max_steps", "3", "--losses.0.args", "{}"],
                           str(config))
    assert cfg.losses[0].name == "mc" and cfg.trainer.max_steps == 3


@pytest.mark.parametrize("argv, expected", [
    (["--trainer.max_stepz", "3"], ["trainer.max_stepz", "did you mean 'max_steps'", "max_epochs"]),
    (["--data.batch_size", "four"], ["data.batch_size", "int", "four"]),
    (["--trainer.precision", "bf16"], ["trainer.precision", "bf16-mixed", "32-true"]),
    (["--losses.0.name", "suree"], ["losses.0.name", "suree", "did you mean 'sure'", "registered names"]),
    (["--losses.0.args", "{tauu: 0.1}"], ["losses.0.args.tauu", "accepted arguments", "tau"]),
    (["--physics.noise.name", "gauss"], ["physics.noise.name", "gaussian", "poisson"]),
])
def test_config_errors_name_the_field_and_the_allowed_values(config, capsys, argv, expected):
    with pytest.raises(ConfigError) as e:
        parse_run_config(argv, str(config))
    for s in expected:
        assert s in str(e.value), (s, str(e.value))
    # and the CLI reports it as an error without running anything
    assert main(["fit", "--config", str(config)] + argv) == 2
    assert expected[0] in capsys.readouterr().err


def test_typo_in_the_yaml_file_is_reported(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(CONFIG.replace("batch_size: 4", "batchsize: 4"))
    with pytest.raises(ConfigError, match=r"data.batchsize.*did you mean 'batch_size'"):
        parse_run_config([], str(p))
    p.write_text(CONFIG + "optimiser: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"unknown config section 'optimiser'.*'optim'"):
        parse_run_config([], str(p))


def test_simulate_writes_a_measurement_file(tmp_path, config):
    out = tmp_path / "meas.npz"
    assert main(["simulate", "--config", str(config), "--output", str(out), "--data.num_patches", "5"]) == 0
    with np.load(out) as z:
        y, x = z["y"], z["x"]
    assert y.shape == x.shape == (5, 1, 16, 16)
    # Gaussian noise sigma = 0.1: the residual std over 1280 pixels is 0.1 within ~5 standard errors (0.002 each)
    assert abs(float(np.std(y - x)) - 0.1) < 0.01
    assert not torch.equal(torch.from_numpy(y), torch.from_numpy(x))


def test_unknown_command_and_help(capsys):
    assert main(["train"]) == 2
    assert "expected one of" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_identifiability_prints_the_theory_report(config, capsys):
    # denoising (A = I) on 6 x 6 images: full rank n = 36, nothing to learn from symmetry
    assert main(["identifiability", "--config", str(config), "--image_size", "6"]) == 0
    out = capsys.readouterr().out
    assert "36 / 36" in out


CT_CONFIG = """
data: {patch_size: 16, num_patches: 16, batch_size: 4, val_fraction: 0.25, seed: 0}
physics: {name: tomography, args: {n_views: 20}, noise: {name: gaussian, args: {sigma: 0.01}}}
model: {backbone: {name: unet, args: {scales: 2, base_channels: 4, batch_norm: false}}}
losses:
  - {name: mc}
trainer: {max_steps: 2, progress_bar: false, accelerator: cpu, log_every_n_steps: 1}
"""


def test_ct_model_trained_on_crops_predicts_a_larger_sinogram(tmp_path, capsys):
    # trained on 16x16 crops (sinograms 20 x 23); a 40x40 slice with the same angles has
    # sinograms 20 x 57 (57 = ceil(sqrt(2) 40)): predict rebuilds the physics for it
    from selfinv.physics import Tomography

    cfg = tmp_path / "ct.yaml"
    cfg.write_text(CT_CONFIG)
    out = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--trainer.output_dir", str(out)]) == 0
    x = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    y = Tomography(40, n_views=20).A(x)[0, 0].numpy()
    np.save(tmp_path / "sino.npy", y)
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "sino.npy"), "--output", str(tmp_path / "rec"), "--format", "npy"]) == 0
    assert np.load(tmp_path / "rec" / "sino.npy").squeeze().shape == (40, 40)
    np.save(tmp_path / "bad.npy", np.zeros((20, 59), dtype=np.float32))  # no N gives 59 bins
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "bad.npy"), "--output", str(tmp_path / "rec2"), "--format", "npy"]) == 2
    assert "59 detector bins" in capsys.readouterr().err


def test_identifiability_of_a_random_operator_is_seeded(capsys):
    """Inpainting draws its mask at random: without --n_operators the CLI reports one *seeded* draw, so two
    runs print the same ranks (they used to come from the unseeded global RNG)."""
    from pathlib import Path

    cfg = Path(__file__).resolve().parent.parent / "configs" / "claims" / "theory_inpainting.yaml"
    outs = []
    for _ in range(2):
        torch.manual_seed(len(outs))  # a different global RNG state each time
        assert main(["identifiability", "--config", str(cfg), "--image_size", "8"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and "/ 64" in outs[0]


def test_output_into_a_closed_pipe_is_no_traceback():
    """`selfinv --help | head -1`: when the reader of stdout is gone, the command stops with exit code 1 and
    prints nothing on stderr (a real process; the pipe's read end is closed before it writes)."""
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "selfinv", "--help"], stdout=write_end, stderr=subprocess.PIPE,
                              timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 1 and done.stderr.decode() == "", done.stderr.decode()
