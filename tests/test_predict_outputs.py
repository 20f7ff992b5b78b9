"""``selfinv predict``: what it writes when the asked format cannot hold the data, the output's metadata, and the
files it refuses (a k-space file for an image checkpoint, a file that is no checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_denoiser_config

from selfinv.cli import main
from selfinv.config import from_dict
from selfinv.training.engine import fit

PRETRAIN = tiny_denoiser_config("splitting", sigma=0.1, num_patches=16, batch_size=4, steps=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    fit(from_dict({**PRETRAIN, "trainer": {**PRETRAIN["trainer"], "output_dir": str(out)}}))
    return str(out / "checkpoints" / "last.ckpt")


def _predict(checkpoint, source, out, *extra) -> int:
    return main(["predict", "--checkpoint", checkpoint, "--input", str(source), "--output", str(out),
                 "--progress", "false", *extra])


def test_png_that_cannot_hold_the_data_is_tiff_with_a_note(checkpoint, tmp_path, capsys, one_thread):
    """``--format png`` of a uint16 stack or a float32 image: a TIFF, and one line says why; a single uint16 image
    is a PNG, without a note."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "stack.tif", rng.integers(100, 200, (3, 24, 24), dtype=np.uint16),
                     photometric="minisblack")
    tifffile.imwrite(tmp_path / "f32.tif", rng.random((24, 24), dtype=np.float32))
    tifffile.imwrite(tmp_path / "u16.tif", rng.integers(100, 200, (24, 24), dtype=np.uint16))
    capsys.readouterr()
    assert _predict(checkpoint, tmp_path / "stack.tif", tmp_path / "a", "--format", "png") == 0
    assert "note: stack.tif: PNG cannot hold a stack of 3 images: wrote TIFF instead" in capsys.readouterr().out
    assert tifffile.imread(tmp_path / "a" / "stack.tif").shape == (3, 24, 24)
    assert _predict(checkpoint, tmp_path / "f32.tif", tmp_path / "b", "--format", "png") == 0
    assert "note: f32.tif: PNG cannot hold float32 data" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["f32.tif"]
    assert _predict(checkpoint, tmp_path / "u16.tif", tmp_path / "c", "--format", "png") == 0
    assert "PNG cannot hold" not in capsys.readouterr().out
    assert np.asarray(Image.open(tmp_path / "c" / "u16.png")).dtype == np.uint16


def test_mrc_of_a_tiff_stack_has_a_nonzero_z_voxel_size(checkpoint, tmp_path, one_thread):
    """A TIFF stack with a pixel size but no Z spacing: the MRC's voxel is as deep as it is wide (not 0)."""
    import mrcfile
    import tifffile

    stack = np.random.default_rng(0).integers(100, 200, (3, 24, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um", "axes": "ZYX"})
    assert _predict(checkpoint, tmp_path / "stack.tif", tmp_path / "out", "--format", "mrc") == 0
    with mrcfile.open(tmp_path / "out" / "stack.mrc") as m:
        vx = m.voxel_size
        assert m.data.shape == (3, 24, 24)
    assert float(vx.x) == pytest.approx(5000.0) and float(vx.z) == pytest.approx(float(vx.x))


def test_tiff_of_a_dicom_is_float32(checkpoint, tmp_path, one_thread):
    """A DICOM (rescaled to float64 Hounsfield units) written as TIFF: float32, which ImageJ reads."""
    import pydicom.data
    import tifffile

    src = pydicom.data.get_testdata_file("CT_small.dcm")
    with pytest.warns(UserWarning, match="far from the about"):  # HU on a network trained on [0, 1]
        assert _predict(checkpoint, src, tmp_path / "out", "--format", "tiff") == 0
    assert tifffile.imread(tmp_path / "out" / "CT_small.tif").dtype == np.float32


def test_kspace_file_on_an_image_checkpoint_names_the_physics_it_needs(checkpoint, tmp_path, capsys):
    import h5py

    with h5py.File(tmp_path / "knee.h5", "w") as f:
        f["kspace"] = (np.random.default_rng(0).normal(size=(1, 16, 16)) * (1 + 1j)).astype(np.complex64)
    capsys.readouterr()
    assert _predict(checkpoint, tmp_path / "knee.h5", tmp_path / "out") == 2
    assert ("error: this checkpoint was trained for denoising; knee.h5 holds MRI k-space (needs a checkpoint "
            "trained with physics mri or mri_multicoil: 2 channels, real and imaginary)") in capsys.readouterr().err


class _NotAllowed:
    """An object ``torch.load(weights_only=True)`` refuses to unpickle."""


@pytest.mark.parametrize("kind, expected", [
    ("text", "fake.ckpt is not a PyTorch checkpoint (a text file); expected a .ckpt written by 'selfinv fit'"),
    ("tiff", "fake.ckpt is not a PyTorch checkpoint (a TIFF image)"),
    ("npz", "fake.ckpt is not a PyTorch checkpoint (a zip archive without torch.save's data.pkl)"),
    ("pickle", "it holds Python objects that selfinv refuses to unpickle"),
])
def test_a_file_that_is_no_checkpoint_is_named_as_such(kind, expected, tmp_path, capsys):
    """A text file, an image or another zip archive passed as --checkpoint is "not a PyTorch checkpoint"; a real
    PyTorch file holding objects outside the allowed types keeps the security refusal."""
    import tifffile

    fake = tmp_path / "fake.ckpt"
    if kind == "text":
        fake.write_text("model: unet\nweights: somewhere\n")
    elif kind == "tiff":
        with open(fake, "wb") as f:
            tifffile.imwrite(f, np.zeros((8, 8), np.uint8))
    elif kind == "npz":
        with open(fake, "wb") as f:
            np.savez(f, a=np.zeros(3))
    else:
        torch.save({"state_dict": {}, "obj": _NotAllowed()}, fake)
    np.save(tmp_path / "y.npy", np.zeros((16, 16), np.float32))
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(fake), "--input", str(tmp_path / "y.npy"), "--output",
                 str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err
    if kind != "pickle":
        assert "unpickle" not in err


def test_predict_names_the_array_it_read_from_a_file_of_several(tmp_path, checkpoint):
    """``--key a`` then ``--key b`` of one NPZ file write two outputs, not one over the other."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "two.npz", a=rng.random((32, 32)).astype(np.float32),
             b=rng.random((32, 32)).astype(np.float32))
    for key in ("a", "b"):
        assert main(["predict", "--checkpoint", checkpoint, "--input", str(tmp_path / "two.npz"), "--output",
                     str(tmp_path / "out"), "--key", key, "--format", "npy"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["two_a.npy", "two_b.npy"]


def test_predict_with_pairs_writes_the_mean_of_the_two_reconstructions(checkpoint, tmp_path, capsys, one_thread):
    """``--pairs``: a second noisy measurement of each input (two exposures); the output is the mean of the two
    reconstructions, each as predict gives it alone; inputs and pairs that do not correspond are refused."""
    rng = np.random.default_rng(0)
    x = rng.random((24, 24)).astype(np.float32)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            np.save(tmp_path / folder / f"im{i}.npy", (x + 0.1 * rng.standard_normal(x.shape)).astype(np.float32))
    for folder in ("a", "b"):
        assert _predict(checkpoint, tmp_path / folder, tmp_path / f"out_{folder}") == 0
    assert _predict(checkpoint, tmp_path / "a", tmp_path / "out_pair", "--pairs", str(tmp_path / "b")) == 0
    assert "each the mean of the reconstructions of its pair" in capsys.readouterr().out
    for i in range(2):
        a, b = (np.load(tmp_path / f"out_{f}" / f"im{i}.npy") for f in ("a", "b"))
        np.testing.assert_allclose(np.load(tmp_path / "out_pair" / f"im{i}.npy"), (a + b) / 2, atol=1e-6)
    (tmp_path / "b" / "im1.npy").unlink()
    assert _predict(checkpoint, tmp_path / "a", tmp_path / "out_bad", "--pairs", str(tmp_path / "b")) == 2
    assert "--pairs holds 1 measurement(s) but --input 2" in capsys.readouterr().err


def test_output_naming_a_file_writes_that_file(checkpoint, tmp_path, capsys, one_thread):
    """``--output denoised.tif`` for one input file writes exactly that file (its format from the extension; no
    folder of that name, nothing left beside it); several input files, or an output file of a container type for
    an image input, are refused in one line; a name without an image extension stays a folder."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(100, 200, (24, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", image)
    tifffile.imwrite(tmp_path / "in2.tif", image)
    (tmp_path / "out").mkdir()
    capsys.readouterr()
    assert _predict(checkpoint, tmp_path / "in.tif", tmp_path / "out" / "denoised.tif") == 0
    assert "to " + str(tmp_path / "out" / "denoised.tif") in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["denoised.tif"]
    assert tifffile.imread(tmp_path / "out" / "denoised.tif").shape == (24, 24)
    assert _predict(checkpoint, tmp_path / "in.tif", tmp_path / "out" / "denoised.png") == 0  # format by extension
    assert np.asarray(Image.open(tmp_path / "out" / "denoised.png")).dtype == np.uint16
    assert _predict(checkpoint, tmp_path / "in.tif", tmp_path / "out" / "denoised.tif") == 0  # replaced
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["denoised.png", "denoised.tif"]
    tifffile.imwrite(tmp_path / "stack.tif", rng.integers(100, 200, (3, 24, 24), dtype=np.uint16),
                     photometric="minisblack")
    capsys.readouterr()
    assert _predict(checkpoint, tmp_path / "stack.tif", tmp_path / "out" / "s.png") == 0  # PNG cannot hold it
    out = capsys.readouterr().out
    assert "wrote TIFF instead" in out and "to " + str(tmp_path / "out" / "s.tif") in out
    assert tifffile.imread(tmp_path / "out" / "s.tif").shape == (3, 24, 24)
    assert not (tmp_path / "out" / "s.png").exists()
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("in.tif", "in2.tif"):
        tifffile.imwrite(folder / name, image)
    capsys.readouterr()
    assert _predict(checkpoint, folder, tmp_path / "both.tif") == 2
    assert "--output " + str(tmp_path / "both.tif") + " names one file, but --input holds 2 measurement files" \
        in capsys.readouterr().err
    assert _predict(checkpoint, tmp_path / "in.tif", tmp_path / "x.h5") == 2
    assert "an .h5 output is the input's own HDF5 / NPZ file" in capsys.readouterr().err
    assert not (tmp_path / "both.tif").exists() and not (tmp_path / "x.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".selfinv")) == []
    assert _predict(checkpoint, tmp_path / "in.tif", tmp_path / "plain") == 0
    assert [p.name for p in (tmp_path / "plain").iterdir()] == ["in.tif"]
