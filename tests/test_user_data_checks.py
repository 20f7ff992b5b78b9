"""A new user's mistakes with their own files get one clear line, found before any training.

Found by trying selfinv on files it never saw (stop 26): a fastMRI k-space file trained as an image,
targets of another size, Noise2Noise "pairs" that are the data themselves, an output folder that is a
file, a 1-pixel image, files in two units in one folder, a notes file beside the images, arrays that
could not be chosen, a truncated DICOM blamed on a missing decoder, and `advise --data` on k-space,
tiny or constant images.
"""

import numpy as np
import pytest
import torch

from selfinv.cli import main

CONFIG = """
data: {patch_size: 16, num_patches: 8, val_fraction: 0.25}
physics: {name: denoising}
losses: [{name: splitting}]
trainer: {max_steps: 2, progress_bar: false, figures: false}
"""


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(CONFIG)
    return p


def _images(folder, n=2, size=(32, 32), seed=0, scale=1.0, dtype=np.float32):
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        tifffile.imwrite(folder / f"im{i}.tif", (scale * rng.random(size)).astype(dtype))
    return folder


def _kspace_file(path):
    import h5py

    rng = np.random.default_rng(0)
    k = (rng.standard_normal((2, 16, 16)) + 1j * rng.standard_normal((2, 16, 16))).astype(np.complex64)
    mask = np.zeros(16, bool)
    mask[::4] = mask[6:10] = True
    with h5py.File(path, "w") as f:
        f["kspace"] = k * mask
        f["mask"] = mask
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_kspace_file_with_a_denoising_config_is_refused_naming_physics_mri(tmp_path, config, capsys):
    h5 = _kspace_file(tmp_path / "scan.h5")
    assert main(["fit", "--config", str(config), "--data.path", str(h5), "--trainer.output_dir",
                 str(tmp_path / "run")]) == 2
    err = _error_line(capsys)
    assert "MRI k-space" in err and "physics: {name: mri}" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_advise_on_a_kspace_file_advises_mri_with_the_file_as_data(tmp_path, capsys):
    h5 = _kspace_file(tmp_path / "scan.h5")
    assert main(["advise", "--data", str(h5), "--image_size", "4"]) == 0
    out = capsys.readouterr().out
    assert "holds MRI k-space" in out and "keeps 7 of 16 columns" in out
    assert "name: mri" in out and f"path: {h5}" in out
    assert main(["advise", "--physics", "denoising", "--data", str(h5)]) == 2
    assert "use --physics mri" in _error_line(capsys)


def test_advise_data_refuses_tiny_and_noise_free_images(tmp_path, capsys):
    np.save(tmp_path / "one.npy", np.ones((1, 1), np.float32))
    np.save(tmp_path / "flat.npy", np.full((32, 32), 3.0, np.float32))
    assert main(["advise", "--data", str(tmp_path / "one.npy")]) == 2
    assert "(1, 1) pixels" in _error_line(capsys)
    assert main(["advise", "--data", str(tmp_path / "flat.npy")]) == 2
    assert "constant images" in _error_line(capsys)


def test_advise_data_reads_the_noise_family_of_noise_model(tmp_path, capsys):
    import tifffile
    from skimage import data

    rng = np.random.default_rng(0)
    clean = np.stack([im.astype(np.float64)[:128, :128] / 255 * 40 for im in (data.camera(), data.moon())])
    counts = (100 + 2 * rng.poisson(clean)).astype(np.uint16)  # 2 ADU per photon on a 100 ADU offset
    tifffile.imwrite(tmp_path / "counts.tif", counts, photometric="minisblack")
    assert main(["advise", "--data", str(tmp_path / "counts.tif"), "--image_size", "4"]) == 0
    out = capsys.readouterr().out
    assert "declare the noise {name: poisson" in out and "data.offset" not in out
    assert main(["advise", "--data", str(tmp_path / "counts.tif"), "--image_size", "4",
                 "--noise_model", "{name: poisson, args: {gain: 2}}"]) == 0
    out = capsys.readouterr().out
    assert "declare the noise {name: poisson" not in out  # it is declared
    assert "data.offset" in out  # and its offset is read


def test_identical_noise2noise_pairs_are_refused(tmp_path, config, capsys):
    folder = _images(tmp_path / "a")
    assert main(["fit", "--config", str(config), "--data.path", str(folder), "--data.pairs", str(folder),
                 "--losses", "[{name: noise2noise}]", "--trainer.output_dir", str(tmp_path / "run")]) == 2
    assert "is identical to" in _error_line(capsys)


def test_targets_of_another_size_are_refused_naming_both_sizes(tmp_path, config, capsys):
    data, target = _images(tmp_path / "a"), _images(tmp_path / "t", size=(24, 24))
    assert main(["fit", "--config", str(config), "--data.path", str(data), "--data.target", str(target),
                 "--trainer.output_dir", str(tmp_path / "run")]) == 2
    err = _error_line(capsys)
    assert "(24, 24)" in err and "(32, 32)" in err


def test_output_dir_that_is_a_file_or_cannot_be_made(tmp_path, config, capsys):
    data = _images(tmp_path / "a")
    (tmp_path / "afile").write_text("")
    assert main(["fit", "--config", str(config), "--data.path", str(data), "--trainer.output_dir",
                 str(tmp_path / "afile")]) == 2
    assert "is a file" in _error_line(capsys)
    (tmp_path / "ro").write_text("")
    assert main(["fit", "--config", str(config), "--data.path", str(data), "--trainer.output_dir",
                 str(tmp_path / "ro" / "run")]) == 2  # a parent that is a file
    assert "cannot create the folder" in _error_line(capsys)


def test_a_one_pixel_image_is_too_small_to_train_on(tmp_path, config, capsys):
    folder = _images(tmp_path / "a")
    np.save(tmp_path / "one.npy", np.ones((1, 1), np.float32))
    assert main(["fit", "--config", str(config), "--data.path", str(tmp_path / "one.npy"), "--trainer.output_dir",
                 str(tmp_path / "run")]) == 2
    err = _error_line(capsys)
    assert "too small to train on" in err and "lower data.patch_size" not in err
    assert folder.exists()


def test_images_in_two_units_warn_at_fit(tmp_path):
    from selfinv.data.normalization import Normalization
    from selfinv.data.sources import Measurement
    from selfinv.data.user_data import warn_mixed_units

    rng = torch.Generator().manual_seed(0)
    ms = [Measurement(y=torch.rand(1, 16, 16, generator=rng) * s, name=n, source=f"{n}.png")
          for s, n in ((255.0, "eight"), (65535.0, "sixteen"), (60000.0, "sixteen2"))]
    with pytest.warns(UserWarning, match="different units.*eight"):
        assert warn_mixed_units(ms, Normalization(0.0, 65535.0)) == ["eight"]
    same = [Measurement(y=torch.rand(1, 16, 16, generator=rng) * 255, name=f"m{i}", source="f") for i in range(3)]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_mixed_units(same, Normalization(0.0, 255.0)) == []


def test_a_folder_with_a_notes_file_and_a_subfolder_is_read_with_a_warning(tmp_path):
    from selfinv.data.sources import read_source

    folder = _images(tmp_path / "a")
    (folder / "notes.txt").write_text("exposure 10 s")
    (folder / "old").mkdir()
    with pytest.warns(UserWarning, match=r"read 2 file\(s\), skipped 1 file.*notes.txt.*1 subfolder"):
        ms = read_source(folder)
    assert [m.name for m in ms] == ["im0", "im1"]
    (folder / "im0.tif").unlink()
    (folder / "im1.tif").unlink()
    with pytest.raises(ValueError, match="unsupported file 'notes.txt'"):
        read_source(folder)


def test_several_arrays_name_the_option_that_chooses_one(tmp_path):
    from selfinv.data.sources import read_source

    np.savez(tmp_path / "two.npz", a=np.zeros((8, 8)), b=np.ones((8, 8)))
    with pytest.raises(ValueError, match=r"choose one with key=NAME"):
        read_source(tmp_path / "two.npz")
    assert read_source(tmp_path / "two.npz", "b")[0].y.mean() == 1


def test_a_truncated_uncompressed_dicom_is_called_truncated_not_undecodable(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from selfinv.data.sources import read_source

    src = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(src)
    assert not ds.file_meta.TransferSyntaxUID.is_compressed
    ds.PixelData = ds.PixelData[:-100]  # the pixel data stops short
    ds.save_as(tmp_path / "cut.dcm")
    with pytest.raises(ValueError, match="truncated or damaged") as e:
        read_source(tmp_path / "cut.dcm")
    assert "pylibjpeg" not in str(e.value)


def test_validate_on_data_of_other_channels_names_the_checkpoints_network(tmp_path, config, capsys):
    """A network trained on RGB images (its channels taken from the data) validated on grayscale ones: the
    error names the checkpoint's network, not a config key the user never wrote."""
    import tifffile

    (tmp_path / "rgb").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        tifffile.imwrite(tmp_path / "rgb" / f"c{i}.tif", (255 * rng.random((32, 32, 3))).astype(np.uint8),
                         photometric="rgb")
    gray = _images(tmp_path / "gray")
    run, net = tmp_path / "run", ["--model.backbone.args", "{scales: 2, base_channels: 4, batch_norm: false}"]
    assert main(["fit", "--config", str(config), "--data.path", str(tmp_path / "rgb"), "--trainer.output_dir",
                 str(run), "--data.batch_size", "2", *net]) == 0
    capsys.readouterr()
    ckpt = str(run / "checkpoints" / "last.ckpt")
    assert main(["validate", "--config", str(config), "--checkpoint", ckpt, "--data.path", str(gray), *net]) == 2
    err = _error_line(capsys)
    assert f"the network of {ckpt} takes 3-channel images" in err and "leave in_channels" not in err
