"""Fine-tuning a checkpoint on one measurement (selfinv.finetune, `selfinv finetune`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_denoiser_config

from selfinv.config import from_dict
from selfinv.finetune import SingleMeasurementDataset, finetune, load_measurement
from selfinv.training.engine import fit

PRETRAIN = tiny_denoiser_config()


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


def test_finetune_sure_with_sigma_auto_uses_tau_auto(pretrained, noisy, tmp_path):
    """σ estimated (``sigma: auto``): SURE's step is ``tau: auto`` (σ/10 of the estimate), not the default 0.01
    chosen for no particular σ; a tau the user gave is kept, as is the default for a given σ."""
    from selfinv.finetune import finetune_config
    from selfinv.training.checkpoint import load_checkpoint

    pre = load_checkpoint(pretrained)["hyper_parameters"]["config"]
    y = noisy[1]
    auto = {"args": {"sigma": "auto"}}
    cfg, _ = finetune_config(pre, y, "sure", steps=1, noise=auto, output_dir=str(tmp_path / "a"))
    assert cfg.losses[0].args["tau"] == "auto"
    cfg, _ = finetune_config(pre, y, [{"name": "sure", "args": {"tau": 0.004}}], steps=1, noise=auto,
                             output_dir=str(tmp_path / "b"))
    assert cfg.losses[0].args["tau"] == 0.004
    cfg, _ = finetune_config(pre, y, "sure", steps=1, noise={"args": {"sigma": 0.15}}, output_dir=str(tmp_path / "c"))
    assert "tau" not in cfg.losses[0].args


def test_cli_finetune_sigma_auto_leaves_no_temporary_folder(pretrained, noisy, tmp_path, capsys, monkeypatch):
    """Without --run_dir the run folder is temporary: removed at the end, also when the fine-tuning fails; and
    ``--loss sure --sigma auto`` fine-tunes without SURE's warning about a step too large for the estimated σ."""
    import tempfile
    import warnings

    from selfinv.cli import main
    from selfinv.data.writers import write_image

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    meas = write_image(tmp_path / "y.tif", noisy[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["finetune", "--checkpoint", pretrained, "--measurement", str(meas), "--loss", "sure", "--sigma",
                     "auto", "--steps", "1", "--batch_size", "2", "--patch_size", "16", "--output",
                     str(tmp_path / "x.tif")]) == 0
    assert not [w for w in caught if "SURE: tau" in str(w.message)]
    out = capsys.readouterr().out
    assert "wrote" in out and "--run_dir DIR keeps the fine-tuned run" in out and "last.ckpt" not in out
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(ValueError):  # an error once the temporary folder exists: removed all the same
        finetune(pretrained, noisy[1], losses="no_such_loss", steps=1, patch_size=16)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_cli_finetune_refuses_before_training(pretrained, noisy, tmp_path, capsys):
    """What finetune cannot write or cannot fine-tune on is refused before any training: an unknown output
    extension (naming every format written, DICOM included), a float image to PNG, colour to MRC, a k-space file
    for a denoising network."""
    import h5py

    from selfinv.cli import main
    from selfinv.data.writers import write_image

    meas = str(write_image(tmp_path / "y.tif", noisy[1]))  # float32
    rgb = str(write_image(tmp_path / "rgb.png", noisy[1].clamp(0, 1).expand(3, -1, -1)))
    with h5py.File(tmp_path / "knee.h5", "w") as f:
        f["kspace"] = (np.random.default_rng(0).normal(size=(1, 16, 16)) * (1 + 1j)).astype(np.complex64)
    cases = [(meas, "ft.xyz", "--output {out}: '.xyz' is none of the formats finetune writes: .tif .tiff .png .npy "
                               ".mrc .mrcs .map .fits .fit .fts, or .dcm .dicom for a DICOM measurement"),
             (meas, "ft.png", "--output {out}: PNG cannot hold the reconstruction of y.tif, float32 data"),
             (rgb, "ft.mrc", "--output {out}: MRC holds single-channel images, and rgb.png has 3 channels"),
             (str(tmp_path / "knee.h5"), "ft.tif", "this checkpoint was trained for denoising; knee.h5 holds MRI "
                                                   "k-space (needs a checkpoint trained with physics mri")]
    for i, (source, name, expected) in enumerate(cases):
        out = tmp_path / name
        capsys.readouterr()
        assert main(["finetune", "--checkpoint", pretrained, "--measurement", source, "--steps", "1",
                     "--output", str(out), "--run_dir", str(tmp_path / f"run{i}")]) == 2
        err = capsys.readouterr().err
        assert expected.format(out=out) in err, err
        assert not (tmp_path / f"run{i}").exists() and not out.exists()


def test_finetune_crops_a_large_image_domain_measurement_by_default(pretrained, tmp_path):
    """Above 256 pixels a side the default items are 128-pixel crops (the data config says so); at or below,
    and whenever patch_size is given, nothing changes."""
    big = torch.rand(1, 260, 300, generator=torch.Generator().manual_seed(0))
    r = finetune(pretrained, big, losses="sure", steps=1, batch_size=1, output_dir=str(tmp_path / "big"),
                 noise={"name": "gaussian", "args": {"sigma": 0.15}})
    assert r.config.data.patch_size == 128 and r.x_after.shape[-2:] == (260, 300)
    small = torch.rand(1, 256, 200, generator=torch.Generator().manual_seed(1))
    r = finetune(pretrained, small, losses="sure", steps=1, batch_size=1, output_dir=str(tmp_path / "small"),
                 noise={"name": "gaussian", "args": {"sigma": 0.15}})
    assert r.config.data.patch_size == 200  # the whole measurement (its width)
    r = finetune(pretrained, big, losses="sure", steps=1, batch_size=1, patch_size=64,
                 output_dir=str(tmp_path / "given"), noise={"name": "gaussian", "args": {"sigma": 0.15}})
    assert r.config.data.patch_size == 64
