"""Fine-tuning a checkpoint on one measurement (selfinv.finetune, `selfinv finetune`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selfinv.config import from_dict
from selfinv.finetune import SingleMeasurementDataset, finetune, load_measurement
from selfinv.training.engine import fit

PRETRAIN = {
    "data": {"dataset": "natural-gray", "patch_size": 16, "num_patches": 32, "batch_size": 8, "seed": 0},
    "physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": 0.05}}},
    "model": {"backbone": {"name": "unet", "args": {"scales": 2, "base_channels": 4, "batch_norm": False}}},
    "losses": [{"name": "supervised"}],
    "trainer": {"max_steps": 3, "accelerator": "cpu", "progress_bar": False, "figures": False,
                "val_every": 1000, "checkpoint_every": 1000},
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    fit(from_dict({**PRETRAIN, "trainer": {**PRETRAIN["trainer"], "output_dir": str(out)}}))
    return str(out / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def noisy():
    from selfinv.data.bundled import load_dataset

    x = load_dataset("natural-gray", "test").images[0][..., 200:248, 200:248].float()
    y = x + 0.15 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return x, y


def test_single_measurement_dataset_crops_are_seeded_and_inside():
    y = torch.arange(100.0).reshape(1, 10, 10)
    ds = SingleMeasurementDataset(y, patch_size=4, length=20, seed=3)
    a, b = ds[5]["y"], SingleMeasurementDataset(y, patch_size=4, length=20, seed=3)[5]["y"]
    assert a.shape == (1, 4, 4) and torch.equal(a, b)
    # a crop is a contiguous block of y: consecutive rows differ by 10, columns by 1
    assert torch.all(a[:, 1:] - a[:, :-1] == 10) and torch.all(a[..., 1:] - a[..., :-1] == 1)
    assert len({tuple(ds[i]["y"].flatten()[:1].tolist()) for i in range(20)}) > 1
    assert torch.equal(SingleMeasurementDataset(y, length=2)[1]["y"], y)
    with pytest.raises(ValueError, match="patch_size"):
        SingleMeasurementDataset(y, patch_size=11)
    with pytest.raises(ValueError, match="per-sample parameters"):
        SingleMeasurementDataset(y, {"mask": torch.ones(1, 10, 10)}, patch_size=4)


def test_finetune_starts_from_the_checkpoint_and_moves_it(pretrained, noisy, tmp_path):
    from selfinv.training.checkpoint import load_checkpoint
    from selfinv.training.engine import build_module

    x, y = noisy
    r = finetune(pretrained, y, losses="sure", steps=3, lr=1e-3, batch_size=2, patch_size=16,
                 noise={"name": "gaussian", "args": {"sigma": 0.15}}, output_dir=str(tmp_path / "ft"))
    ck = load_checkpoint(pretrained)
    ref = build_module(from_dict(ck["hyper_parameters"]["config"]))
    ref.load_state_dict(ck["state_dict"])
    ref.eval()
    with torch.no_grad():
        before = ref(y[None])
    # "before" is exactly the pretrained network's output (weights loaded, not re-initialised)
    torch.testing.assert_close(r.x_before, before)
    assert r.steps == 3 and r.seconds > 0
    assert not torch.allclose(r.x_after, r.x_before)
    assert r.config.physics.noise.args["sigma"] == 0.15 and r.config.losses[0].name == "sure"
    # the fine-tuned checkpoint carries its own physics (sigma = 0.15) for `selfinv predict`
    ft = load_checkpoint(r.checkpoint)
    assert ft["hyper_parameters"]["config"]["physics"]["noise"]["args"]["sigma"] == 0.15


def test_finetune_sigma_auto_estimates_from_the_single_measurement(pretrained, noisy, tmp_path):
    x, y = noisy
    r = finetune(pretrained, y, losses="sure", steps=1, batch_size=2, patch_size=16,
                 noise={"args": {"sigma": "auto"}}, output_dir=str(tmp_path / "auto"))
    est = r.noise_estimate["estimated"]["sigma"]
    # one 48x48 image: 576 diagonal coefficients, SE of the MAD ~ 1.1 * 0.15 / 24 ~ 0.007, plus texture
    # leakage (a few %); 0.03 is > 4 SE.
    assert abs(est - 0.15) < 0.03, est
    assert r.config.physics.noise.args["sigma"] == pytest.approx(est)


def test_cli_finetune_writes_the_reconstruction(pretrained, noisy, tmp_path, capsys):
    from selfinv.cli import main
    from selfinv.data.writers import write_image

    _, y = noisy
    meas = write_image(tmp_path / "y.tif", y)
    out = tmp_path / "x.tif"
    code = main(["finetune", "--checkpoint", pretrained, "--measurement", str(meas), "--loss", "unsure",
                 "--steps", "2", "--batch_size", "2", "--patch_size", "16", "--output", str(out),
                 "--run_dir", str(tmp_path / "run")])
    assert code == 0 and out.exists()
    x_hat, params, _ = load_measurement(out)
    assert x_hat.shape == y.shape and params == {}
    assert "fine-tuned 2 steps" in capsys.readouterr().out
    assert main(["finetune", "--checkpoint", pretrained, "--measurement", str(tmp_path / "missing.tif"),
                 "--output", str(out)]) == 2


def test_cli_finetune_dicom_in_dicom_out(pretrained, tmp_path, capsys):
    """A DICOM measurement fine-tuned to a .dcm output: the input's header, a new instance, the reconstruction in
    the input's units (pydicom's CT_small.dcm: Hounsfield units, intercept -1024); a .dcm output of a non-DICOM
    measurement is refused before any training."""
    import pydicom
    import pydicom.data
    import tifffile

    from selfinv.cli import main

    src = pydicom.data.get_testdata_file("CT_small.dcm")
    common = ["--checkpoint", pretrained, "--measurement", src, "--steps", "2", "--batch_size", "2",
              "--patch_size", "16", "--loss", "unsure"]
    assert main(["finetune", *common, "--output", str(tmp_path / "ct.dcm"), "--run_dir", str(tmp_path / "a")]) == 0
    assert main(["finetune", *common, "--output", str(tmp_path / "ct.tif"), "--run_dir", str(tmp_path / "b")]) == 0
    out, ref = pydicom.dcmread(tmp_path / "ct.dcm"), pydicom.dcmread(src)
    assert out.SOPInstanceUID != ref.SOPInstanceUID and out.PatientName == ref.PatientName
    hu = out.pixel_array * float(out.RescaleSlope) + float(out.RescaleIntercept)
    np.testing.assert_array_equal(hu, np.rint(tifffile.imread(tmp_path / "ct.tif")))  # seeded: the same image
    capsys.readouterr()
    np.save(tmp_path / "y.npy", np.zeros((16, 16), np.float32))
    assert main(["finetune", "--checkpoint", pretrained, "--measurement", str(tmp_path / "y.npy"), "--output",
                 str(tmp_path / "y.dcm"), "--run_dir", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "DICOM output takes the header of a DICOM measurement" in err and "fine-tuned" not in err


def test_cli_finetune_fits_keeps_the_header(pretrained, noisy, tmp_path):
    from astropy.io import fits

    from selfinv.cli import main

    _, y = noisy
    header = fits.Header([("BUNIT", "ADU"), ("CTYPE1", "RA---TAN"), ("CRPIX1", 24.5)])
    fits.PrimaryHDU(y[0].numpy(), header=header).writeto(tmp_path / "y.fits")
    assert main(["finetune", "--checkpoint", pretrained, "--measurement", str(tmp_path / "y.fits"), "--steps", "1",
                 "--batch_size", "2", "--patch_size", "16", "--loss", "unsure", "--output", str(tmp_path / "x.fits"),
                 "--run_dir", str(tmp_path / "run")]) == 0
    with fits.open(tmp_path / "x.fits") as hdul:
        assert hdul[0].data.shape == (48, 48) and hdul[0].header["BUNIT"] == "ADU"
        assert hdul[0].header["CRPIX1"] == 24.5 and "selfinv finetune of y.fits" in str(hdul[0].header["HISTORY"])


def test_cli_finetune_fits_with_blank_pixels(pretrained, noisy, tmp_path):
    """A FITS image with a blank (NaN) edge and blob: fine-tuned on crops free of them, sigma estimated around
    them, the output blank exactly where the input is; the same NaN in a .npy (no blank convention) stays an
    error."""
    from astropy.io import fits

    from selfinv.cli import main

    _, y = noisy
    img = y[0].numpy().copy()
    img[:, :4] = np.nan
    img[30:33, 10:12] = np.nan
    fits.PrimaryHDU(img).writeto(tmp_path / "y.fits")
    # no 48-pixel crop avoids the blank edge: the default crop size is the next that does, 32
    with pytest.warns(UserWarning, match=r"198 blank \(NaN\) pixel\(s\) of 2304: the 32-pixel crops avoid them"):
        assert main(["finetune", "--checkpoint", pretrained, "--measurement", str(tmp_path / "y.fits"), "--steps",
                     "2", "--batch_size", "2", "--sigma", "auto", "--loss", "sure",
                     "--output", str(tmp_path / "x.fits"), "--run_dir", str(tmp_path / "run")]) == 0
    out = fits.getdata(tmp_path / "x.fits")
    assert np.array_equal(np.isnan(out), np.isnan(img)) and np.isfinite(out[~np.isnan(img)]).all()
    np.save(tmp_path / "y.npy", img)
    assert main(["finetune", "--checkpoint", pretrained, "--measurement", str(tmp_path / "y.npy"), "--steps", "1",
                 "--patch_size", "16", "--output", str(tmp_path / "x.npy")]) == 2


@pytest.mark.parametrize("noise, ok", [({"name": "unknown"}, True), ({"name": "poisson", "args": {"gain": 0.05}},
                                                                      False)])
def test_cli_finetune_sigma_on_a_checkpoint_without_a_noise_level(noise, ok, noisy, tmp_path, capsys):
    """``--sigma`` on a network trained without a noise level (Noise2Void: noise 'unknown') fine-tunes with
    Gaussian noise of that level; on a noise model without σ (Poisson) it is refused, naming --noise."""
    from selfinv.cli import main
    from selfinv.data.writers import write_image
    from selfinv.training.checkpoint import load_checkpoint

    meas = write_image(tmp_path / "y.tif", noisy[1].clamp_min(0))
    cfg = {**PRETRAIN, "data": {**PRETRAIN["data"], "dataset": None, "path": str(meas), "val_fraction": 0.0},
           "physics": {"name": "denoising", "noise": noise}, "losses": [{"name": "splitting"}],
           "trainer": {**PRETRAIN["trainer"], "output_dir": str(tmp_path / "pre")}}
    fit(from_dict(cfg))
    capsys.readouterr()
    code = main(["finetune", "--checkpoint", str(tmp_path / "pre" / "checkpoints" / "last.ckpt"), "--measurement",
                 str(meas), "--loss", "sure", "--sigma", "0.15", "--steps", "2", "--batch_size", "2",
                 "--patch_size", "16", "--output", str(tmp_path / "x.tif"), "--run_dir", str(tmp_path / "run")])
    if ok:
        assert code == 0
        tuned = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["hyper_parameters"]["config"]
        assert tuned["physics"]["noise"] == {"name": "gaussian", "args": {"sigma": 0.15}}
    else:
        assert code == 2
        assert "--sigma: the noise model 'poisson' has no level σ; give its parameters with --noise" in \
            capsys.readouterr().err
