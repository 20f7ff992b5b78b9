"""A user's own files, end to end: fit from them, predict on them, in their units, at their sizes.

Every file here is written by the test (TIFF, PNG, NPY, NPZ, MRC, DICOM, fastMRI HDF5); trainings are
a few steps of a tiny network: what is checked is the plumbing (formats, units, sizes, masks), not
the quality.
"""

import re

import numpy as np
import pytest
import torch

from selfinv.cli import main
from selfinv.data.normalization import Normalization
from selfinv.training.checkpoint import load_checkpoint
from selfinv.training.loading import load_trained

RUN = ["--trainer.max_steps", "3", "--trainer.progress_bar", "false", "--trainer.figures", "false",
       "--data.batch_size", "2", "--trainer.log_every_n_steps", "1"]
TINY = ["--model.backbone.args", "{scales: 2, base_channels: 4, batch_norm: false}", *RUN]

N2V = """
data: {patch_size: 16, num_patches: 8, val_fraction: 0.25}
physics: {name: denoising}
losses: [{name: splitting}]
"""


def _phantom(h, w, seed=0):
    from skimage.data import camera
    from skimage.transform import resize

    img = resize(camera().astype(np.float64) / 255, (h, w), anti_aliasing=True)
    return img + 0.05 * np.random.default_rng(seed).standard_normal((h, w))


@pytest.fixture
def n2v_config(tmp_path):
    p = tmp_path / "n2v.yaml"
    p.write_text(N2V)
    return p


def test_uint16_tiff_folder_round_trip_in_uint16_units(tmp_path, n2v_config):
    """A folder of uint16 TIFFs of different sizes (one a 3-page stack), no noise model declared: trains by
    patches, predicts one uint16 file per input, named after it, in the input's units."""
    import tifffile

    src = tmp_path / "cells"
    src.mkdir()
    scale = 20000.0
    imgs = {"a.tif": _phantom(40, 48), "b.tif": _phantom(36, 36, 1),
            "stack.tif": np.stack([_phantom(32, 40, s) for s in range(3)])}
    for name, im in imgs.items():
        tifffile.imwrite(src / name, np.clip(500 + scale * im, 0, 65535).astype(np.uint16), photometric="minisblack")
    out = tmp_path / "run"
    assert main(["fit", "--config", str(n2v_config), "--data.path", str(src), "--trainer.output_dir", str(out),
                 *TINY]) == 0
    ck = load_checkpoint(out / "checkpoints" / "last.ckpt")
    norm = Normalization.from_dict(ck["hyper_parameters"]["normalization"])
    assert norm.kind == "affine" and 0 <= norm.offset < 2000 and 10000 < norm.scale < 30000
    assert ck["hyper_parameters"]["config"]["physics"]["noise"]["name"] == "unknown"
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input", str(src),
                 "--output", str(tmp_path / "den")]) == 0
    run = load_trained(out / "checkpoints" / "last.ckpt")
    for name in imgs:
        raw = tifffile.imread(src / name)
        rec = tifffile.imread(tmp_path / "den" / name)
        assert rec.dtype == np.uint16 and rec.shape == raw.shape, name
        # the network in normalised units, mapped back to uint16 counts (rounded, clipped to the range)
        y = torch.from_numpy(raw.astype(np.float32)).reshape(-1, 1, *raw.shape[-2:])
        with torch.no_grad():
            x = run.normalization.undo(run.module.model(run.normalization.apply(y), run.module.physics))
        ref = np.clip(np.rint(x.double().numpy()), 0, 65535).reshape(raw.shape)
        assert np.abs(rec.astype(np.float64) - ref).max() <= 1, name


def test_single_image_validates_on_a_disjoint_region(tmp_path, n2v_config):
    from selfinv.data.sources import read_source
    from selfinv.data.user_data import TrainingData

    np.save(tmp_path / "one.npy", _phantom(64, 40).astype(np.float32))
    data = TrainingData.from_measurements(read_source(tmp_path / "one.npy"), image_domain=True, patch_size=16,
                                          num_patches=50, val_fraction=0.25, affine=True)
    img = data.normalization.apply(torch.from_numpy(np.load(tmp_path / "one.npy"))[None])
    def rows_of(patch):
        return [r for r in range(64 - 15) for c in range(40 - 15) if torch.equal(img[:, r:r + 16, c:c + 16], patch)]

    for it in data.val.items:  # every validation crop lies in the bottom 16 rows (val_fraction 0.25 of 64)
        rows = rows_of(it["y"])
        assert rows and min(rows) >= 48
    for v in range(200):  # training patches, over several epochs, never reach into them
        rows = rows_of(data.train[v]["y"])
        assert rows and max(rows) + 16 <= 48


def test_mrc_micrograph_and_npz_give_outputs_in_their_format(tmp_path, n2v_config):
    import mrcfile

    with mrcfile.new(tmp_path / "mic.mrc") as m:
        m.set_data((_phantom(48, 48) * 1000).astype(np.float32))
    out = tmp_path / "run"
    assert main(["fit", "--config", str(n2v_config), "--data.path", str(tmp_path / "mic.mrc"),
                 "--trainer.output_dir", str(out), *TINY]) == 0
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "mic.mrc"), "--output", str(tmp_path / "den")]) == 0
    with mrcfile.open(tmp_path / "den" / "mic.mrc") as m:
        assert m.data.shape == (48, 48) and np.isfinite(m.data).all()
    # a RELION-style particle stack (.mrcs) with its pixel size: the output keeps both the extension and the
    # pixel size in its header
    with mrcfile.new(tmp_path / "parts.mrcs") as m:
        m.set_data(np.stack([_phantom(48, 48, s) * 1000 for s in range(3)]).astype(np.float32))
        m.voxel_size = 1.06
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "parts.mrcs"), "--output", str(tmp_path / "den3")]) == 0
    assert sorted(p.name for p in (tmp_path / "den3").iterdir()) == ["parts.mrcs"]
    with mrcfile.open(tmp_path / "den3" / "parts.mrcs") as m:
        assert m.data.shape == (3, 48, 48) and float(m.voxel_size.x) == pytest.approx(1.06, abs=1e-5)
    np.savez(tmp_path / "arr.npz", images=np.stack([_phantom(32, 32, s) for s in range(2)]).astype(np.float32))
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "arr.npz"), "--output", str(tmp_path / "den2")]) == 0
    with np.load(tmp_path / "den2" / "arr.npz") as z:  # the input's container, the array under its own name
        assert z.files == ["images"] and z["images"].shape == (2, 32, 32) and z["images"].dtype == np.float32
    # an HDF5 file of several datasets (one nested in a group): the output is that file with the reconstruction in
    # place of the array read (its attributes kept), every other dataset, group and attribute copied
    import h5py

    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f.attrs["instrument"] = "scope 2"
        f["exposure"] = np.array([1.0, 2.0])
        f["raw/frames"] = np.stack([_phantom(32, 32, s) * 1000 for s in range(2)]).astype(np.uint16)
        f["raw/frames"].attrs["units"] = "ADU"
        f["raw/dark"] = np.zeros((4, 4))
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "scan.h5"), "--key", "raw/frames", "--output", str(tmp_path / "den4")]) == 0
    assert [p.name for p in (tmp_path / "den4").iterdir()] == ["scan_raw_frames.h5"]  # a file, not a folder
    with h5py.File(tmp_path / "den4" / "scan_raw_frames.h5", "r") as f:
        assert f.attrs["instrument"] == "scope 2" and f["exposure"][()].tolist() == [1.0, 2.0]
        assert f["raw/dark"].shape == (4, 4) and f["raw/frames"].attrs["units"] == "ADU"
        assert f["raw/frames"].shape == (2, 32, 32) and f["raw/frames"].dtype == np.uint16


MRI_CONFIG = """
data: {patch_size: 16, val_fraction: 0.25}
physics: {name: mri, args: {acceleration: 4, center_fraction: 0.25}, noise: {name: gaussian, args: {sigma: 1e-6}}}
model: {backbone: {name: unet, args: {in_channels: 2, out_channels: 2}}, reconstructor: {name: back_projection,
        args: {init: adjoint}}}
losses: [{name: ssdu}]
"""


def _fastmri_file(path, kspace, mask=None):
    import h5py

    with h5py.File(path, "w") as f:
        f["kspace"] = kspace.astype(np.complex64)
        if mask is not None:
            f["mask"] = mask.astype(bool)


def _kspace(images):
    x = np.asarray(images, dtype=np.complex128)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def test_fastmri_files_train_with_their_masks_and_predict_with_the_file_mask(tmp_path):
    from selfinv.physics import MRI

    cfg = tmp_path / "mri.yaml"
    cfg.write_text(MRI_CONFIG)
    train = tmp_path / "knee"
    train.mkdir()
    rng = np.random.default_rng(0)
    masks = []
    for f in range(3):  # 24 x 20 k-space, 2 slices per file, each file its own mask, scanner units ~1e-5
        m = np.zeros(20)
        m[8:12] = 1
        m[rng.choice(20, 4, replace=False)] = 1
        masks.append(m)
        k = _kspace([_phantom(24, 20, 2 * f + s) for s in range(2)]) * 3e-5 * m
        _fastmri_file(train / f"file{f}.h5", k, m)
    out = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--data.path", str(train), "--trainer.output_dir", str(out),
                 *RUN, "--model.backbone.args", "{in_channels: 2, out_channels: 2, scales: 2, base_channels: 4}"]) == 0
    run = load_trained(out / "checkpoints" / "last.ckpt")
    assert run.normalization.kind == "scale" and run.normalization.offset == 0.0
    # a fully sampled file of another size, stored without a mask: the mask is read from the data (all lines)
    # and the result equals the network applied with that mask, in the file's units, as magnitude
    k = _kspace([_phantom(32, 28, 9)]) * 3e-5
    _fastmri_file(tmp_path / "full.h5", k)
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "full.h5"), "--output", str(tmp_path / "rec"), "--format", "npy"]) == 0
    got = np.load(tmp_path / "rec" / "full.npy")
    y = torch.from_numpy(np.stack([k.real, k.imag], 1).astype(np.float32))
    op = MRI((32, 28), mask=torch.ones(28), noise=run.module.physics.noise)
    with torch.no_grad():
        est = run.module.loss.estimator(run.module.model)
        x = run.normalization.undo(est(run.normalization.apply(y), op, torch.Generator().manual_seed(0)))
    assert got.shape == (32, 28)
    np.testing.assert_allclose(got, x[0].pow(2).sum(0).sqrt().numpy(), rtol=1e-4, atol=1e-9)
    # an undersampled file with its own mask: reconstructed with that mask (complex output on request)
    m = np.zeros(28)
    m[11:17] = 1
    m[[2, 7, 21, 25]] = 1
    _fastmri_file(tmp_path / "under.h5", k * m, m)
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "under.h5"), "--output", str(tmp_path / "rec2"), "--format", "npy",
                 "--complex"]) == 0
    got = np.load(tmp_path / "rec2" / "under.npy")
    yu = y * torch.from_numpy(m).float()
    with torch.no_grad():
        x = run.normalization.undo(est(run.normalization.apply(yu), op.with_params(mask=torch.from_numpy(m)[None]),
                                       torch.Generator().manual_seed(0)))
    assert got.shape == (2, 32, 28)
    np.testing.assert_allclose(got, x[0].numpy(), rtol=1e-4, atol=1e-9)
    # by default the output is the input's HDF5 file: its mask and attributes, the magnitude image as
    # 'reconstruction_selfinv' (fastMRI's naming), no k-space
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "under.h5"), "--output", str(tmp_path / "rec3")]) == 0
    import h5py

    with h5py.File(tmp_path / "rec3" / "under.h5", "r") as f:
        assert sorted(f) == ["mask", "reconstruction_selfinv"] and "selfinv predict" in f.attrs["selfinv_history"]
        np.testing.assert_array_equal(f["mask"][()], m)
        np.testing.assert_allclose(f["reconstruction_selfinv"][()], np.abs(got[0] + 1j * got[1]), rtol=1e-4,
                                   atol=1e-9)


def test_multicoil_fastmri_file_is_compressed_to_one_virtual_coil(tmp_path):
    """A multi-coil fastMRI file (slices, coils, H, W): each slice's coils become one virtual coil, ``uᴴ k`` with
    ``u`` the leading eigenvector of the coil covariance (it was refused). Coils that are scaled copies of one
    k-space (c_j k) give |virtual| = ||c|| |k| exactly and keep all the energy; a fit + predict runs on the
    file, with a warning saying what was done, and the output is one image per slice."""
    from selfinv.data.readers import compress_coils
    from selfinv.data.sources import read_source

    k = _kspace([_phantom(24, 20, s) for s in range(2)]) * 3e-5
    weights = np.array([1.0, 2.0j, -0.5, 0.3 + 0.4j])
    virtual, kept = compress_coils(k[:, None] * weights[None, :, None, None])
    np.testing.assert_allclose(np.abs(virtual), np.linalg.norm(weights) * np.abs(k), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(kept, 1.0, rtol=1e-6)
    rng = np.random.default_rng(0)
    sens = rng.standard_normal((4, 24, 20)) + 1j * rng.standard_normal((4, 24, 20))  # unrelated coils
    _, kept = compress_coils(_kspace(_phantom(24, 20)[None] * sens)[None])
    assert 0.25 < kept[0] < 0.9  # one virtual coil cannot hold four unrelated ones
    m = np.zeros(20)
    m[[1, 5, 8, 9, 10, 11, 15]] = 1
    yy, xx = np.mgrid[:24, :20]
    coils = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 200.0) for cx, cy in ((0, 0), (19, 0), (0, 23))])
    multi = _kspace(np.stack([_phantom(24, 20, s) for s in range(3)])[:, None] * coils[None]) * 3e-5 * m
    _fastmri_file(tmp_path / "multi.h5", multi, m)
    with pytest.warns(UserWarning, match=r"multi.h5: the 3 receive coils of each slice are compressed to one "
                                         r"virtual coil \(SVD; \d+-\d+ % of the k-space energy kept\)"):
        ms = read_source(tmp_path / "multi.h5")
    assert len(ms) == 3 and all(x.y.shape == (2, 24, 20) and x.kind == "kspace" for x in ms)
    np.testing.assert_array_equal(ms[0].params["mask"].reshape(-1).numpy(), m)
    cfg = tmp_path / "mri.yaml"
    cfg.write_text(MRI_CONFIG)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="compressed to one virtual coil"):
        assert main(["fit", "--config", str(cfg), "--data.path", str(tmp_path / "multi.h5"), "--trainer.output_dir",
                     str(out), *RUN, "--model.backbone.args",
                     "{in_channels: 2, out_channels: 2, scales: 2, base_channels: 4}"]) == 0
        assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                     str(tmp_path / "multi.h5"), "--output", str(tmp_path / "rec"), "--format", "npy"]) == 0
    assert np.load(tmp_path / "rec" / "multi.npy").shape == (3, 24, 20)


CT = """
data: {patch_size: 64, num_patches: 8, val_fraction: 0.25}
physics: {name: tomography, args: {n_views: 12}, noise: {name: gaussian, args: {sigma: 2.0}}}
losses: [{name: mc}, {name: ei, args: {transform: {name: rotate}}}]
"""


def _dicom_series(folder, volume_hu, names=None):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir()
    names = names or [f"s{z}.dcm" for z in range(len(volume_hu))]
    series, study = generate_uid(), generate_uid()
    for z, sl in enumerate(volume_hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / names[z]), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientName = study, series, "Phantom^Test"
        ds.Modality, ds.Rows, ds.Columns = "CT", sl.shape[0], sl.shape[1]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(z)], [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = z + 1
        ds.PixelData = (sl + 1024).astype(np.uint16).tobytes()
        ds.PixelSpacing = [0.5, 0.5]
        ds.save_as(folder / names[z])
    pydicom.dcmread(folder / names[0])  # readable


def _fit_then_predict_as_input_and_as_tiff(tmp_path, config, data, options: list = TINY) -> None:
    """A tiny fit on ``data`` (``options``: the tiny network and run), then predict into ``rec/`` (the input's
    format) and ``tif/`` (``--format tiff``)."""
    out = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--data.path", str(data), "--trainer.output_dir", str(out),
                 *options]) == 0
    ckpt = str(out / "checkpoints" / "last.ckpt")
    assert main(["predict", "--checkpoint", ckpt, "--input", str(data), "--output", str(tmp_path / "rec")]) == 0
    assert main(["predict", "--checkpoint", ckpt, "--input", str(data), "--output", str(tmp_path / "tif"),
                 "--format", "tiff"]) == 0


def test_dicom_series_in_dicom_series_out_with_each_slice_header(tmp_path, n2v_config):
    """A DICOM CT series whose file names are not in slice order: predict writes one derived series, each file
    named after its input, with that input's header (position, study, patient) and its own reconstruction in
    Hounsfield units — the values the TIFF output holds, rounded to the stored integers."""
    import pydicom
    import tifffile

    rng = np.random.default_rng(0)
    vol = np.stack([np.clip(_phantom(40, 40, z) * 1200 - 600 + 30 * rng.standard_normal((40, 40)), -1000, 2000)
                    for z in range(3)])
    names = ["b.dcm", "c.dcm", "a.dcm"]  # positions z = 0, 1, 2
    _dicom_series(tmp_path / "ct", vol, names)
    _fit_then_predict_as_input_and_as_tiff(tmp_path, n2v_config, tmp_path / "ct")
    as_tiff = tifffile.imread(tmp_path / "tif" / "ct.tif")  # slices in position order
    assert sorted(p.name for p in (tmp_path / "rec" / "ct").iterdir()) == sorted(names)
    outs = [pydicom.dcmread(tmp_path / "rec" / "ct" / n) for n in names]
    ins = [pydicom.dcmread(tmp_path / "ct" / n) for n in names]
    assert len({d.SeriesInstanceUID for d in outs}) == 1 and outs[0].SeriesInstanceUID != ins[0].SeriesInstanceUID
    for z, (o, i) in enumerate(zip(outs, ins, strict=True)):
        assert o.StudyInstanceUID == i.StudyInstanceUID and o.PatientName == i.PatientName
        assert o.SOPInstanceUID != i.SOPInstanceUID and o.file_meta.MediaStorageSOPInstanceUID == o.SOPInstanceUID
        assert [float(v) for v in o.ImagePositionPatient] == [0, 0, z] and list(o.ImageType[:2]) == ["DERIVED",
                                                                                                     "SECONDARY"]
        assert o.SourceImageSequence[0].ReferencedSOPInstanceUID == i.SOPInstanceUID
        hu = o.pixel_array * float(o.RescaleSlope) + float(o.RescaleIntercept)
        np.testing.assert_array_equal(hu, np.clip(np.rint(as_tiff[z] + 1024), 0, 65535) - 1024)


def test_rgb_dicom_in_rgb_dicom_out(tmp_path, n2v_config):
    """An RGB DICOM image (secondary capture, dermatology, endoscopy): fit trains a colour network on it and
    predict writes OUT/<name>.dcm as an RGB DICOM image with its header, 8-bit like the input, holding the values
    the TIFF output holds rounded to integers; finetune's .dcm output is RGB too."""
    import pydicom
    import pydicom.data
    import tifffile

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("examples_rgb_color.dcm"))
    rgb = np.stack([_phantom(48, 40, c) for c in range(3)], axis=-1)
    ds.set_pixel_data(np.clip(rgb * 255, 0, 255).astype(np.uint8), "RGB", 8)
    ds.save_as(tmp_path / "photo.dcm")
    colour = ["--model.backbone.args", "{scales: 2, base_channels: 4, batch_norm: false, in_channels: 3, "
              "out_channels: 3}", *RUN]
    _fit_then_predict_as_input_and_as_tiff(tmp_path, n2v_config, tmp_path / "photo.dcm", colour)
    out = pydicom.dcmread(tmp_path / "rec" / "photo.dcm")
    assert (out.PhotometricInterpretation, out.SamplesPerPixel, out.BitsStored) == ("RGB", 3, 8)
    assert out.SeriesInstanceUID != ds.SeriesInstanceUID and out.StudyInstanceUID == ds.StudyInstanceUID
    as_tiff = tifffile.imread(tmp_path / "tif" / "photo.tif")  # (3, H, W) in the input's 0-255 units
    assert as_tiff.shape == (3, 48, 40)
    np.testing.assert_array_equal(np.moveaxis(out.pixel_array, -1, 0), np.clip(np.rint(as_tiff), 0, 255))
    assert main(["finetune", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--measurement",
                 str(tmp_path / "photo.dcm"), "--output", str(tmp_path / "ft.dcm"), "--steps", "2",
                 "--run_dir", str(tmp_path / "ft")]) == 0
    tuned = pydicom.dcmread(tmp_path / "ft.dcm")
    assert (tuned.PhotometricInterpretation, tuned.pixel_array.shape) == ("RGB", (48, 40, 3))


def test_multichannel_hyperstack_trains_a_network_of_its_channels_and_comes_back_as_a_hyperstack(tmp_path,
                                                                                                 n2v_config, capsys):
    """A 2-channel fluorescence z-stack (ImageJ ZCYX, uint16, calibrated in µm) with a config that names no
    channel count: fit trains a 2-channel network (and says so), validate accepts the same config, and predict
    writes a ZCYX uint16 hyperstack with the input's calibration. A config that names another channel count
    and a folder that mixes channel counts are refused with what to change."""
    import tifffile

    stack = np.stack([np.stack([_phantom(32, 40, 2 * z), _phantom(32, 40, 2 * z + 1)[::-1]]) for z in range(3)])
    tifffile.imwrite(tmp_path / "cells.tif", np.clip(300 + 20000 * stack, 0, 65535).astype(np.uint16),
                     imagej=True, resolution=(1 / 0.1, 1 / 0.1), metadata={"axes": "ZCYX", "unit": "um"})
    run = tmp_path / "run"
    fit = ["--config", str(n2v_config), "--data.path", str(tmp_path / "cells.tif"), "--trainer.output_dir", str(run)]
    assert main(["fit", *fit, *TINY]) == 0
    ck = load_checkpoint(run / "checkpoints" / "last.ckpt")
    args = ck["hyper_parameters"]["config"]["model"]["backbone"]["args"]
    assert (args["in_channels"], args["out_channels"]) == (2, 2)
    assert main(["validate", *fit, *TINY, "--checkpoint", str(run / "checkpoints" / "last.ckpt")]) == 0
    assert main(["predict", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "cells.tif"), "--output", str(tmp_path / "den")]) == 0
    with tifffile.TiffFile(tmp_path / "den" / "cells.tif") as tif:
        assert (tif.series[0].axes, tif.series[0].shape, tif.series[0].dtype) == ("ZCYX", (3, 2, 32, 40), np.uint16)
        assert tif.imagej_metadata["unit"] == "um"
        assert tif.pages[0].tags["XResolution"].value == (10, 1)

    capsys.readouterr()
    assert main(["fit", *fit, "--model.backbone.args", "{in_channels: 1, out_channels: 1}", *RUN]) == 2
    assert re.search(r"cells_0000 .* has 2 channel\(s\) but model.backbone.args.in_channels is 1 \(leave "
                     r"in_channels and out_channels out", capsys.readouterr().err)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "a.tif", (65535 * np.clip(_phantom(32, 32), 0, 1)).astype(np.uint16))
    tifffile.imwrite(mixed / "b.tif", np.clip(300 + 20000 * stack[0], 0, 65535).astype(np.uint16),
                     photometric="minisblack", metadata={"axes": "CYX"})
    assert main(["fit", "--config", str(n2v_config), "--data.path", str(mixed), *TINY]) == 2
    assert re.search(r"b .* has 2 channel\(s\) but a .* has 1: one run trains one network",
                     capsys.readouterr().err)


def test_noise2noise_trains_on_pairs_given_by_data_pairs(tmp_path, capsys):
    """Two noisy measurements of each image in two folders (even / odd frame sums of cryo-EM movies, two
    exposures): data.pairs gives the second; training patches and validation crops of a pair are cut at the
    same place (a pair that differs by 1 everywhere gives y2 - y = 1 in every item), Noise2Noise trains, and
    folders that do not match one to one are refused with what differs."""
    import mrcfile

    from selfinv.config import from_dict
    from selfinv.training.engine import load_data

    for d in ("even", "odd", "few"):
        (tmp_path / d).mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        x = _phantom(40, 36, i).astype(np.float32)
        for d, shift in (("even", 0.0), ("odd", 1.0)):
            with mrcfile.new(tmp_path / d / f"mic{i}.mrc") as m:
                m.set_data(x + np.float32(shift))
    with mrcfile.new(tmp_path / "few" / "mic0.mrc") as m:
        m.set_data(rng.standard_normal((40, 36)).astype(np.float32))
    cfg = {"data": {"path": str(tmp_path / "even"), "pairs": str(tmp_path / "odd"), "patch_size": 16,
                    "num_patches": 8, "val_fraction": 0.34, "normalize": "none"},
           "physics": {"name": "denoising", "noise": {"name": "unknown"}}, "losses": [{"name": "noise2noise"}]}
    data = load_data(from_dict(cfg))
    items = [data.train[v] for v in range(8)] + [data.val[v] for v in range(len(data.val))]
    assert all(torch.allclose(it["y2"] - it["y"], torch.ones_like(it["y"])) for it in items)
    conf = tmp_path / "n2n.yaml"
    conf.write_text("data: {patch_size: 16, num_patches: 8, val_fraction: 0.34}\n"
                    "physics: {name: denoising}\nlosses: [{name: noise2noise}]\n")
    common = ["fit", "--config", str(conf), "--data.path", str(tmp_path / "even"), *TINY]
    assert main([*common, "--data.pairs", str(tmp_path / "odd"), "--trainer.output_dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main([*common, "--data.pairs", str(tmp_path / "few")]) == 2
    assert "data.pairs holds 1 measurement(s) but data.path 3" in capsys.readouterr().err
    assert main(common) == 2
    assert "give the second measurement of each image with data.pairs" in capsys.readouterr().err


def test_fit_warns_when_a_blind_spot_loss_cannot_beat_the_input(tmp_path, n2v_config, capsys):
    """Images with detail finer than the noise (period-2 stripes of 0.2 under noise 0.05): Noise2Void, which
    predicts each pixel from its neighbours, gets a NeighbourDetailWarning naming the losses that see the pixel;
    the same images with the noise above the detail get none; ``advise --data`` says it of the first only."""
    import warnings

    import tifffile

    from selfinv.training.auto_noise import NeighbourDetailWarning

    rng = np.random.default_rng(0)
    j = np.arange(48)[None, :]
    for name, noise in (("fine", 0.05), ("noisy", 0.4)):
        (tmp_path / name).mkdir()
        for k in range(2):
            img = 0.5 + 0.2 * (1 - 2 * (j % 2)) + 0.3 * _phantom(48, 48, k) + noise * rng.standard_normal((48, 48))
            tifffile.imwrite(tmp_path / name / f"im{k}.tif", img.astype(np.float32))
    run = ["fit", "--config", str(n2v_config), *TINY]
    expected = r"the loss splitting: trained to predict each pixel from its neighbours, but .* sure or r2r .* " \
               r"or noise2noise with data.pairs"
    with pytest.warns(NeighbourDetailWarning, match=expected):
        assert main([*run, "--data.path", str(tmp_path / "fine"), "--trainer.output_dir", str(tmp_path / "r1")]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeighbourDetailWarning)
        assert main([*run, "--data.path", str(tmp_path / "noisy"), "--trainer.output_dir", str(tmp_path / "r2")]) == 0
    # advise --data says the same before any training
    for name, said in (("fine", True), ("noisy", False)):
        capsys.readouterr()
        assert main(["advise", "--data", str(tmp_path / name)]) == 0
        assert ("unlikely to beat the noisy input" in capsys.readouterr().out) == said, name


def test_validate_with_the_config_of_a_sigma_auto_run_uses_its_estimate(tmp_path, capsys):
    """``sigma: auto`` is resolved at fit time and stored; validate --config (the same file, still 'auto')
    takes the stored estimate: the loss it reports is the one of the estimate given explicitly. Validating
    writes nothing into the run folder's logs."""
    import tifffile

    src = tmp_path / "data"
    src.mkdir()
    for i in range(2):
        tifffile.imwrite(src / f"g{i}.tif", (200 * _phantom(40, 40, i)).astype(np.float32))
    cfg = tmp_path / "auto.yaml"
    cfg.write_text("data: {patch_size: 16, num_patches: 8, val_fraction: 0.5}\n"
                   "physics: {name: denoising, noise: {name: gaussian, args: {sigma: auto}}}\n"
                   "losses: [{name: sure}]\n")
    run = tmp_path / "run"
    common = ["--config", str(cfg), "--data.path", str(src), "--trainer.output_dir", str(run), *TINY]
    assert main(["fit", *common]) == 0
    ck = load_checkpoint(run / "checkpoints" / "last.ckpt")
    sigma = ck["hyper_parameters"]["config"]["physics"]["noise"]["args"]["sigma"]
    assert isinstance(sigma, float) and 5 < sigma < 20  # 0.05 x 200 in the data's units
    ckpt = str(run / "checkpoints" / "last.ckpt")

    def val_loss(*options) -> float:
        capsys.readouterr()
        assert main(["validate", *common, *options, "--checkpoint", ckpt]) == 0
        return float(re.search(r"'val/loss': ([0-9.e+-]+)", capsys.readouterr().out).group(1))

    log = (run / "logs" / "metrics.csv").read_text()
    assert val_loss() == val_loss("--physics.noise.args", f"{{sigma: {sigma!r}}}")
    assert (run / "logs" / "metrics.csv").read_text() == log  # validate leaves the training's log alone


def test_a_folder_of_two_dicom_series_gives_two_derived_series(tmp_path, n2v_config):
    """Two series of one size in one folder train together; predict gives each its own derived series. Two series
    of different sizes are an error naming both."""
    import pydicom

    vol = np.stack([np.clip(_phantom(32, 32, z) * 1200 - 600, -1000, 2000) for z in range(4)])
    _dicom_series(tmp_path / "ct", vol[:2], ["a0.dcm", "a1.dcm"])
    _dicom_series(tmp_path / "other", vol[2:], ["b0.dcm", "b1.dcm"])
    for f in (tmp_path / "other").iterdir():
        f.rename(tmp_path / "ct" / f.name)
    _fit_then_predict_as_input_and_as_tiff(tmp_path, n2v_config, tmp_path / "ct")
    pairs = {(str(pydicom.dcmread(tmp_path / "ct" / n).SeriesInstanceUID),
              str(pydicom.dcmread(tmp_path / "rec" / "ct" / n).SeriesInstanceUID))
             for n in ("a0.dcm", "a1.dcm", "b0.dcm", "b1.dcm")}
    assert len(pairs) == 2 and len({i for i, _ in pairs}) == 2 and len({o for _, o in pairs}) == 2
    _dicom_series(tmp_path / "small", vol[:1, :16, :16], ["c0.dcm"])
    (tmp_path / "small" / "c0.dcm").rename(tmp_path / "ct" / "c0.dcm")
    with pytest.raises(ValueError, match=r"holds 3 DICOM series of different image sizes .*16x16.*one series"):
        from selfinv.data.sources import read_source
        read_source(tmp_path / "ct")


def test_fits_in_fits_out_with_its_header(tmp_path, n2v_config):
    """An astronomer's FITS file (observation keywords in the primary header; the image in a SCI extension with
    its WCS and units; error and quality planes and a table beside it): predict writes OUT/<name>.fits with the
    same structure — the reconstruction (the values the TIFF output holds) in SCI under the input's header, the
    primary header and the other HDUs as they were."""
    import tifffile
    from astropy.io import fits

    img = 100 + 50 * np.stack([_phantom(40, 40, 0)])[0] + np.random.default_rng(0).normal(0, 3, (40, 40))
    h = fits.Header()
    h["BUNIT"], h["CTYPE1"], h["CRPIX1"], h["CDELT1"] = "ADU", "RA---TAN", 20.5, -1e-5
    primary = fits.Header()
    primary["TELESCOP"], primary["OBJECT"] = "HST", "NGC 1234"
    err, dq = np.full((40, 40), 3.0, np.float32), (np.arange(1600).reshape(40, 40) % 3).astype(np.int16)
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.arange(4.0))], name="CAT")
    fits.HDUList([fits.PrimaryHDU(header=primary), fits.ImageHDU(img.astype(np.float32), header=h, name="SCI"),
                  fits.ImageHDU(err, name="ERR"), fits.ImageHDU(dq, name="DQ"), table]).writeto(tmp_path / "f.fits")
    _fit_then_predict_as_input_and_as_tiff(tmp_path, n2v_config, tmp_path / "f.fits")
    with fits.open(tmp_path / "rec" / "f.fits") as hdul:
        assert [x.name for x in hdul] == ["PRIMARY", "SCI", "ERR", "DQ", "CAT"]
        assert hdul[0].header["TELESCOP"] == "HST" and hdul[0].data is None
        assert hdul["SCI"].header["BUNIT"] == "ADU" and hdul["SCI"].header["CRPIX1"] == 20.5
        assert "selfinv predict (splitting) of f.fits: HDU 1 (SCI) replaced by the reconstruction; the other HDUs " \
               "are the input's" in str(hdul["SCI"].header["HISTORY"]).replace("\n", "")
        np.testing.assert_array_equal(hdul["SCI"].data, tifffile.imread(tmp_path / "tif" / "f.tif"))
        np.testing.assert_array_equal(hdul["ERR"].data, err)
        np.testing.assert_array_equal(hdul["DQ"].data, dq)
        np.testing.assert_array_equal(hdul["CAT"].data["flux"], np.arange(4.0))
    # blank (NaN) pixels, as on a mosaic's edge: filled for the network, blank again in the output
    blanked = img.astype(np.float32)
    blanked[:, :6] = np.nan
    fits.PrimaryHDU(blanked, header=h).writeto(tmp_path / "blank.fits")
    with pytest.warns(UserWarning, match=r"240 blank \(NaN\) pixel\(s\) of 1600: filled with the image's median"):
        assert main(["predict", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--input",
                     str(tmp_path / "blank.fits"), "--output", str(tmp_path / "rec")]) == 0
    out = fits.getdata(tmp_path / "rec" / "blank.fits")
    assert np.array_equal(np.isnan(out), np.isnan(blanked)) and out.shape == (40, 40)


@pytest.mark.parametrize("redraws", [1000, 0])  # 0: every position picked among the free ones directly
def test_patches_avoid_blank_pixels_and_cover_the_free_positions_uniformly(monkeypatch, redraws):
    """An image with a blank (NaN) band and blob: no patch ever holds a blank pixel, and the patch positions are
    uniform over the positions free of them (chi-square over 24 positions x 4800 draws, p > 0.001 with seed 0),
    by rejection and by the direct pick."""
    from selfinv.data import user_data
    from selfinv.data.user_data import RandomPatches, blank_free_positions

    monkeypatch.setattr(user_data, "MAX_REDRAWS", redraws)
    im = torch.rand(1, 8, 9)
    im[:, :, :2] = float("nan")  # a mosaic's edge
    im[:, 4, 5] = float("nan")
    free = blank_free_positions(torch.isnan(im[0]), 3)
    n_free = int(free.sum())
    assert free.shape == (6, 7) and n_free == 5 * 6 - 9  # 30 positions right of the band, 9 cover (4, 5)
    data = RandomPatches([im], 3, 4800, seed=0)
    seen = torch.zeros(6, 7)
    for k in range(len(data)):
        y = data[k]["y"]
        assert not bool(torch.isnan(y).any())
        r, c = next((r, c) for r in range(6) for c in range(7) if torch.equal(im[:, r:r + 3, c:c + 3], y))
        seen[r, c] += 1
    assert bool((seen[~free] == 0).all()) and bool((seen[free] > 0).all())
    expected = len(data) / n_free
    chi2 = float(((seen[free] - expected) ** 2 / expected).sum())
    assert chi2 < 49.7  # the 0.999 quantile of chi-square with 20 degrees of freedom


def test_a_fits_image_with_blank_pixels_trains_around_them(tmp_path, n2v_config, capsys):
    """Training on a FITS image whose edge and a blob are blank (NaN): a warning, patches and validation crops
    free of blank pixels, a finite normalisation; the same in a float TIFF (a stitched mosaic's edge), whose
    reconstruction keeps them blank; an infinity stays an error naming the file."""
    import tifffile
    from astropy.io import fits

    from selfinv.data.sources import read_source
    from selfinv.data.user_data import TrainingData

    img = (100 + 50 * _phantom(64, 64, 0) + np.random.default_rng(0).normal(0, 3, (64, 64))).astype(np.float32)
    img[:, :6] = np.nan
    img[20:24, 30:34] = np.nan
    fits.PrimaryHDU(img).writeto(tmp_path / "blank.fits")
    ms = read_source(tmp_path / "blank.fits")
    data = TrainingData.from_measurements(ms, image_domain=True, patch_size=16, num_patches=64, val_fraction=0.25,
                                          affine=True)
    assert np.isfinite([data.normalization.offset, data.normalization.scale]).all()
    assert all(not bool(torch.isnan(data.train[k]["y"]).any()) for k in range(len(data.train)))
    assert len(data.val) > 0 and all(not bool(torch.isnan(it["y"]).any()) for it in data.val.items)
    assert all(not bool(torch.isnan(t).any()) for t in data.noise_samples)
    with pytest.warns(UserWarning, match=r"blank: 400 blank \(NaN\) pixel\(s\) of 4096: training patches and "
                                         r"validation crops avoid them"):
        assert main(["fit", "--config", str(n2v_config), "--data.path", str(tmp_path / "blank.fits"),
                     "--trainer.output_dir", str(tmp_path / "run"), *TINY]) == 0
    # advise --data measures the noise around them, also for a config whose sigma is 'auto' (no data.path)
    auto = tmp_path / "auto.yaml"
    auto.write_text("physics: {name: denoising, noise: {name: gaussian, args: {sigma: auto}}}\n"
                    "losses: [{name: sure}]\n")
    capsys.readouterr()
    assert main(["advise", "--config", str(auto), "--data", str(tmp_path / "blank.fits"), "--output",
                 str(tmp_path / "advice.yaml")]) == 0
    assert "Measured on 1 measurement(s) of " in capsys.readouterr().out
    # the advised config reads the data it was measured on: ready for fit as it is
    from selfinv.safe_yaml import load_file

    assert load_file(tmp_path / "advice.yaml")["data"]["path"] == str(tmp_path / "blank.fits")
    tifffile.imwrite(tmp_path / "blank.tif", img)
    with pytest.warns(UserWarning, match=r"blank: 400 blank \(NaN\) pixel\(s\) of 4096"):
        assert main(["fit", "--config", str(n2v_config), "--data.path", str(tmp_path / "blank.tif"),
                     "--trainer.output_dir", str(tmp_path / "run_tif"), *TINY]) == 0
    with pytest.warns(UserWarning, match=r"left blank in the output"):
        assert main(["predict", "--checkpoint", str(tmp_path / "run_tif" / "checkpoints" / "last.ckpt"),
                     "--input", str(tmp_path / "blank.tif"), "--output", str(tmp_path / "rec")]) == 0
    rec = tifffile.imread(next((tmp_path / "rec").glob("*.tif")))
    assert rec.dtype == np.float32 and np.array_equal(np.isnan(rec), np.isnan(img))
    capsys.readouterr()
    assert main(["advise", "--data", str(tmp_path / "blank.tif"), "--output", str(tmp_path / "advice2.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Measured on 1 measurement(s) of " in out and "replace measurements.npz" not in out
    assert load_file(tmp_path / "advice2.yaml")["data"]["path"] == str(tmp_path / "blank.tif")
    img[40, 40] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", img)
    assert main(["fit", "--config", str(n2v_config), "--data.path", str(tmp_path / "inf.tif"),
                 "--trainer.output_dir", str(tmp_path / "run_inf"), *TINY]) == 2
    assert re.search(r"inf .*inf.tif.*: the measurements hold 1 non-finite value\(s\) .* at index \(0, 0, 40, 40\)",
                     capsys.readouterr().err)  # the 400 blank pixels are not counted: only the infinity
    assert main(["advise", "--data", str(tmp_path / "inf.tif")]) == 2
    assert "inf.tif) holds 401 non-finite value(s)" in capsys.readouterr().err


def test_dicom_output_needs_a_dicom_input(tmp_path, n2v_config):
    np.save(tmp_path / "y.npy", np.random.default_rng(0).random((2, 24, 24)).astype(np.float32))
    out = tmp_path / "run"
    assert main(["fit", "--config", str(n2v_config), "--data.path", str(tmp_path / "y.npy"), "--trainer.output_dir",
                 str(out), *TINY]) == 0
    with pytest.raises(ValueError, match="DICOM output takes the header of a DICOM input"):
        from selfinv.predict import predict
        predict(str(out / "checkpoints" / "last.ckpt"), str(tmp_path / "y.npy"), str(tmp_path / "rec"),
                format="dicom", progress=False)


def test_ct_from_dicom_slices_trained_on_patches_reconstructs_a_larger_slice(tmp_path):
    """DICOM CT slices (Hounsfield units) -> sinograms of 64x64 patches (simulate) -> fit -> the sinogram of
    a 128x128 slice with the same angles reconstructs at 128x128, in the file's units."""
    from selfinv.physics import Tomography

    cfg = tmp_path / "ct.yaml"
    cfg.write_text(CT)
    vol = np.stack([np.clip(_phantom(136, 136, z) * 1200 - 600, -1000, 2000) for z in range(3)])
    _dicom_series(tmp_path / "ct", vol)
    assert main(["simulate", "--config", str(cfg), "--data.path", str(tmp_path / "ct"), "--output",
                 str(tmp_path / "sino.npz")]) == 0
    with np.load(tmp_path / "sino.npz") as z:
        assert z["y"].shape == (8, 1, 12, 91) and z["x"].min() < -500  # HU kept; ceil(sqrt(2) 64) + 1 bins
    out = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--data.path", str(tmp_path / "sino.npz"), "--trainer.output_dir",
                 str(out), *TINY]) == 0
    big = torch.from_numpy(vol[:1, None, 4:132, 4:132].astype(np.float32))
    np.save(tmp_path / "slice128.npy", Tomography(128, n_views=12).A(big)[0, 0].numpy())
    assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input",
                 str(tmp_path / "slice128.npy"), "--output", str(tmp_path / "rec")]) == 0
    rec = np.load(tmp_path / "rec" / "slice128.npy")
    assert rec.shape == (128, 128) and np.isfinite(rec).all()
    assert -1500 < float(rec.mean()) < 1500  # Hounsfield-like units, not [0, 1]


def test_target_ground_truth_is_logged(tmp_path, n2v_config):
    clean = np.stack([_phantom(32, 32, s) for s in range(4)]).astype(np.float32)
    np.save(tmp_path / "noisy.npy", clean + 0.1 * np.random.default_rng(1).standard_normal(clean.shape)
            .astype(np.float32))
    np.save(tmp_path / "clean.npy", clean)
    out = tmp_path / "run"
    assert main(["fit", "--config", str(n2v_config), "--data.path", str(tmp_path / "noisy.npy"), "--data.target",
                 str(tmp_path / "clean.npy"), "--trainer.output_dir", str(out), *TINY]) == 0
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "val/psnr" in header


def test_sigma_is_given_and_estimated_in_the_data_units(tmp_path):
    """σ = 500 in uint16 counts: the training physics holds σ / scale; sigma: auto reports counts."""
    import json

    import tifffile

    cfg = tmp_path / "sure.yaml"
    cfg.write_text(N2V.replace("physics: {name: denoising}",
                               "physics: {name: denoising, noise: {name: gaussian, args: {sigma: auto}}}")
                   .replace("[{name: splitting}]", "[{name: sure}]"))
    rng = np.random.default_rng(0)
    clean = 10000 + 20000 * np.stack([_phantom(48, 48, s) for s in range(4)])
    tifffile.imwrite(tmp_path / "y.tif", np.clip(clean + 500 * rng.standard_normal(clean.shape), 0, 65535)
                     .astype(np.uint16), photometric="minisblack")
    out = tmp_path / "run"
    assert main(["fit", "--config", str(cfg), "--data.path", str(tmp_path / "y.tif"), "--trainer.output_dir",
                 str(out), *TINY]) == 0
    est = json.loads((out / "noise_estimate.json").read_text())["estimated"]["sigma"]
    # the phantom carries its own 0.05 * 20000 = 1000 of texture noise on top of the 500 added:
    # the estimate is the total, sqrt(1000^2 + 500^2) = 1118, within the Haar-MAD's few-% texture bias
    assert 900 < est < 1400, est
    run = load_trained(out / "checkpoints" / "last.ckpt")
    assert float(run.module.physics.noise.sigma) == pytest.approx(est / run.normalization.scale, rel=1e-6)


def _colored(h, w, seed, correlated):
    """camera() at h x w plus noise of marginal sigma 0.1: white, or filtered by [a, 1, a] x [a, 1, a]
    (neighbour correlation 0.5, a = 1 - 1/sqrt(2))."""
    from scipy.ndimage import convolve
    from skimage.data import camera
    from skimage.transform import resize

    img = resize(camera().astype(np.float64) / 255, (h, w), anti_aliasing=True)
    n = np.random.default_rng(seed).standard_normal((h, w))
    if correlated:
        a = 1 - 1 / np.sqrt(2)
        k = np.outer([a, 1, a], [a, 1, a])
        n = convolve(n, k / np.sqrt((k ** 2).sum()), mode="wrap")
    return img + 0.1 * n


@pytest.mark.parametrize("correlated, loss, warns", [
    (True, "{name: splitting}", True),
    (False, "{name: splitting}", False),
    (True, "{name: splitting, args: {exclusion_radius: 2}}", False),
])
def test_fit_warns_when_the_noise_is_correlated_and_the_loss_assumes_white_noise(tmp_path, correlated, loss, warns):
    """Noise2Void on a micrograph whose noise is spatially correlated learns to predict the noise from its
    neighbours: fit measures the correlation of the user's measurements and warns, with the advice, when
    it is longer than the loss tolerates (``Loss.tolerated_noise_correlation``); the measurement is
    kept in noise_estimate.json. White noise, or a structured mask as wide as the correlation: silent."""
    import json
    import warnings

    import tifffile

    from selfinv.physics.noise_estimation import CorrelatedNoiseWarning

    f = tmp_path / "micrograph.tif"
    tifffile.imwrite(f, (1000 + 5000 * _colored(256, 256, 0, correlated)).astype(np.float32))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{patch_size: 16, num_patches: 8, val_fraction: 0.25}}\nphysics: {{name: denoising}}\n"
                   f"losses: [{loss}]\n")
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["fit", "--config", str(cfg), "--data.path", str(f), "--trainer.output_dir", str(out),
                     *TINY]) == 0
    flagged = [w for w in caught if issubclass(w.category, CorrelatedNoiseWarning)]
    assert bool(flagged) == warns, [str(w.message) for w in caught]
    if warns:
        assert "the loss splitting assumes noise correlated over at most 0 pixel" in str(flagged[0].message)
        assert "exclusion_radius" in str(flagged[0].message)
    record = json.loads((out / "noise_estimate.json").read_text())["correlation"]
    assert record["white"] == (not correlated)
    if correlated:  # measured neighbour correlation of this noise: 0.5 (benchmarks/results/correlated_noise.md)
        assert 0.35 < record["neighbours"]["x1"] < 0.65 and 0.35 < record["neighbours"]["y1"] < 0.65


def test_sigma_auto_on_correlated_noise_warns_and_reports_the_pixel_sigma(tmp_path):
    """SURE with ``sigma: auto`` on correlated noise: the fit warns (no scalar sigma makes SURE valid
    there); sigma stays the Haar-MAD estimate, which sees about half of this noise, and the record
    gives the pixel-level sigma beside it (in the user's units: 5000 x 0.1 = 500)."""
    import json
    import re
    import warnings

    import tifffile

    from selfinv.physics.noise_estimation import CorrelatedNoiseWarning

    f = tmp_path / "m.tif"
    tifffile.imwrite(f, (1000 + 5000 * _colored(256, 256, 1, True)).astype(np.float32))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {patch_size: 16, num_patches: 8, val_fraction: 0.25}\n"
                   "physics: {name: denoising, noise: {name: gaussian, args: {sigma: auto}}}\n"
                   "losses: [{name: sure}]\n")
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["fit", "--config", str(cfg), "--data.path", str(f), "--trainer.output_dir", str(out),
                     *TINY]) == 0
    assert any(issubclass(w.category, CorrelatedNoiseWarning) for w in caught)
    record = json.loads((out / "noise_estimate.json").read_text())
    assert record["correlation"]["white"] is False
    assert 200 < record["estimated"]["sigma"] < 330, record  # Haar-MAD: about 50 % of 500
    assert 420 < record["correlation"]["sigma_pixel"] < 580, record
    assert re.search(r"pixel-level sigma of (\d+)", record["method"])


def _photon_counts(offset, seed=0):
    """Four 128x128 scikit-image images at up to 40 photons, gain 2 ADU per photon, plus ``offset`` ADU."""
    from skimage import data

    rng = np.random.default_rng(seed)
    clean = np.stack([im.astype(np.float64)[:128, :128] / 255 * 40
                      for im in (data.cell(), data.moon(), data.camera(), data.coins())])
    return (offset + 2 * rng.poisson(clean)).astype(np.uint16), offset + 2 * clean


@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_variance_zero_level_reads_a_detector_offset(offset):
    """``var(y) = g (mu - o)`` for ``y = o + g Poisson``: the fitted variance vanishes at the offset (within 10 %
    of the data's range here; without an offset within 3.5 % of the 99.5th percentile, see OFFSET_LEVEL)."""
    from selfinv.physics.noise_estimation import variance_zero_level

    y, _ = _photon_counts(offset)
    mu0 = variance_zero_level(torch.from_numpy(y.astype(np.float32))[:, None])
    assert abs(mu0 - offset) < 10, mu0


def test_fit_warns_of_a_detector_offset_and_data_offset_removes_it(tmp_path):
    """Photon counts with a camera offset of 100 ADU under a Poisson model (whose variance is gain × y, no
    offset): fit says so and names data.offset; with data.offset: 100 it is silent, trains on (y - 100) / s and
    predicts in ADU with the offset added back."""
    import warnings

    import tifffile

    from selfinv.training.auto_noise import DetectorOffsetWarning

    y, _ = _photon_counts(100.0)
    f = tmp_path / "counts.tif"
    tifffile.imwrite(f, y, photometric="minisblack")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {patch_size: 16, num_patches: 8, val_fraction: 0.25}\n"
                   "physics: {name: denoising, noise: {name: poisson, args: {gain: 2}}}\n"
                   "losses: [{name: sure, args: {noise: poisson}}]\n")

    def fit(out, *extra):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["fit", "--config", str(cfg), "--data.path", str(f), "--trainer.output_dir", str(out),
                         *TINY, *extra]) == 0
        return [str(w.message) for w in caught if issubclass(w.category, DetectorOffsetWarning)]

    flagged = fit(tmp_path / "plain")
    assert len(flagged) == 1 and "data.offset" in flagged[0] and "falls to zero at y ≈ 10" in flagged[0], flagged
    assert fit(tmp_path / "offset", "--data.offset", "100") == []
    ck = tmp_path / "offset" / "checkpoints" / "last.ckpt"
    norm = Normalization.from_dict(load_checkpoint(ck)["hyper_parameters"]["normalization"])
    assert norm.offset == 100.0 and norm.kind == "given offset"
    assert abs(norm.scale - np.quantile(np.abs(y.astype(np.float64) - 100), 0.995)) < 0.05 * norm.scale
    assert main(["predict", "--checkpoint", str(ck), "--input", str(f), "--output", str(tmp_path / "den")]) == 0
    rec = tifffile.imread(tmp_path / "den" / "counts.tif")
    assert rec.dtype == np.uint16 and rec.shape == y.shape
    run = load_trained(ck)
    yt = torch.from_numpy(y.astype(np.float32))[:, None]
    with torch.no_grad():
        x = run.normalization.undo(run.module.model(run.normalization.apply(yt), run.module.physics))
    assert np.abs(rec.astype(np.float64) - np.clip(np.rint(x.double().numpy()), 0, 65535)[:, 0]).max() <= 1


def test_advise_on_offset_photon_counts_names_data_offset(tmp_path, capsys):
    """``selfinv advise --data`` with a Poisson config reads the offset off the files and writes it as
    data.offset of the advised config (with or without a config of the user's), and is silent once data.offset
    is set (the user's value is kept)."""
    import tifffile

    from selfinv.safe_yaml import load_file

    y, _ = _photon_counts(100.0)
    f = tmp_path / "counts.tif"
    tifffile.imwrite(f, y, photometric="minisblack")
    advised = tmp_path / "advised.yaml"
    for offset, expected in (("", True), (", offset: 100", False)):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"data: {{path: {f}{offset}}}\nphysics: {{name: denoising, noise: {{name: poisson, args: "
                       f"{{gain: 2}}}}}}\nlosses: [{{name: sure, args: {{noise: poisson}}}}]\n")
        assert main(["advise", "--config", str(cfg), "--data", str(f), "--output", str(advised)]) == 0
        out = capsys.readouterr().out
        assert ("The noise variance of these measurements falls to zero at y ≈ 10" in out) == expected, out[:400]
        assert ("set data.offset" in out) == expected
        written = load_file(advised)["data"]["offset"]
        assert (95 < written < 115 and written != 100) if expected else written == 100, written
        assert ("data.offset: 10" in out and "is where the noise variance of your data vanishes" in out) == expected
    assert main(["advise", "--data", str(f), "--noise_model", "{name: poisson}", "--output", str(advised)]) == 0
    assert 95 < load_file(advised)["data"]["offset"] < 115


def test_data_offset_is_refused_where_it_has_no_meaning(tmp_path):
    """data.offset belongs to the user's image-domain files: the bundled data sets, sinograms / k-space and a
    non-finite value are refused in one line naming the field."""
    from selfinv.config import ConfigError, from_dict
    from selfinv.data.normalization import fit_normalization
    from selfinv.data.sources import Measurement
    from selfinv.data.user_data import TrainingData

    with pytest.raises(ConfigError, match="data.offset is the detector offset of your files"):
        from_dict({"data": {"dataset": "natural-gray", "offset": 10.0}})
    sinograms = [Measurement(torch.rand(1, 30, 40), f"s{i}", "sino.npy", i, 2) for i in range(2)]
    with pytest.raises(ValueError, match=r"data.offset \(10\) applies to image-domain measurements"):
        TrainingData.from_measurements(sinograms, image_domain=False, patch_size=16, num_patches=4,
                                       val_fraction=0.5, offset=10.0)
    with pytest.raises(ValueError, match="data.offset must be a finite number"):
        fit_normalization([torch.ones(3)], affine=False, offset=float("nan"))


def _bright_counts(gain, seed=0):
    """Four 128x128 scikit-image images at 100-500 photons (coins: its bright coins are textured, which the
    variance fit reads as noise growing with the level), ``gain`` ADU per photon, uint16."""
    from skimage import data

    rng = np.random.default_rng(seed)
    clean = np.stack([100 + 400 * im.astype(np.float64)[:128, :128] / 255
                      for im in (data.coins(), data.moon(), data.camera(), data.coins()[128:, 128:])])
    return (gain * rng.poisson(clean)).astype(np.uint16)


def test_count_lattice_finds_the_step_of_scaled_counts():
    from selfinv.training.auto_noise import count_lattice

    counts = torch.from_numpy(_bright_counts(1).astype(np.float32))
    assert count_lattice(counts) == 1.0
    assert count_lattice(3 * counts) == 3.0
    assert count_lattice((0.1 * counts).float()) == pytest.approx(0.1, rel=1e-7)
    assert count_lattice(60000 + counts) == 1.0  # large values: the step is read off the smallest ones
    assert count_lattice(counts + 0.01 * torch.rand(counts.shape, generator=torch.Generator().manual_seed(0))) is None
    assert count_lattice(counts - 200) is None  # negative: not counts
    assert count_lattice(torch.full((8, 8), 5.0)) is None  # one value: no step


def test_gain_auto_on_photon_counts_is_the_count_step_and_poisson_r2r_trains(tmp_path):
    """uint16 photon counts (gain 1 and 2) of textured images: ``gain: auto`` used to take the variance fit, which
    read 0.89 on such files and refused Poisson R2R ("y / gain is not a non-negative integer"); the values are
    integer multiples of the gain, which is now taken, and R2R trains."""
    import json

    import tifffile

    for gain in (1, 2):
        f = tmp_path / f"counts{gain}.tif"
        tifffile.imwrite(f, _bright_counts(gain), photometric="minisblack")
        cfg = tmp_path / "c.yaml"
        cfg.write_text("data: {patch_size: 16, num_patches: 8, val_fraction: 0.25}\n"
                       "physics: {name: denoising, noise: {name: poisson, args: {gain: auto}}}\n"
                       "losses: [{name: r2r, args: {noise: poisson}}]\n")
        out = tmp_path / f"run{gain}"
        assert main(["fit", "--config", str(cfg), "--data.path", str(f), "--trainer.output_dir", str(out),
                     *TINY]) == 0
        record = json.loads((out / "noise_estimate.json").read_text())
        assert record["estimated"]["gain"] == gain and record["method"].startswith("count lattice"), record


def test_gain_auto_warns_when_the_count_step_is_not_the_noise_gain():
    """Integer ADU from 0.3 ADU per photon (rounded): a lattice of step 1, a variance of 0.3 × the level: not
    1 × Poisson counts. The fit is kept and a warning says why."""
    from skimage import data

    from selfinv.config import from_dict
    from selfinv.training.auto_noise import CountLatticeWarning, resolve_auto_noise

    rng = np.random.default_rng(1)
    cam = data.camera().astype(np.float64)[:256, :256]
    clean = np.stack([100 + 400 * cam / 255, 100 + 400 * cam.T / 255])
    y = torch.from_numpy(np.round(0.3 * rng.poisson(clean / 0.3)).astype(np.float32))[:, None]
    cfg = from_dict({"data": {"path": "unused.npz", "dataset": None},
                     "physics": {"name": "denoising", "noise": {"name": "poisson", "args": {"gain": "auto"}}},
                     "losses": [{"name": "sure", "args": {"noise": "poisson"}}]})
    with pytest.warns(CountLatticeWarning, match="integer multiples of 1, but their noise variance grows"):
        out, record = resolve_auto_noise(cfg, list(y.unbind(0)))
    assert record["method"].startswith("variance-vs-mean") and 0.2 < out.physics.noise.args["gain"] < 0.45, record


def test_advise_on_undeclared_photon_counts_suggests_poisson(tmp_path, capsys):
    """``selfinv advise --data`` on uint16 counts without a noise model says they look like counts and how to
    declare them; float data with the same noise get no such note."""
    import tifffile

    counts = _bright_counts(2)
    tifffile.imwrite(tmp_path / "counts.tif", counts, photometric="minisblack")
    tifffile.imwrite(tmp_path / "float.tif", counts.astype(np.float32) + np.float32(0.25) * np.random.default_rng(0)
                     .random(counts.shape, dtype=np.float32), photometric="minisblack")
    assert main(["advise", "--data", str(tmp_path / "counts.tif")]) == 0
    out = capsys.readouterr().out
    assert "Every value is an integer multiple of 2: photon counts × 2?" in out and "gain: 2" in out, out[:600]
    assert main(["advise", "--data", str(tmp_path / "float.tif")]) == 0
    assert "integer multiple" not in capsys.readouterr().out


def test_predict_dtype_float32_keeps_low_counts_unrounded(tmp_path, capsys):
    """int16 photon counts at 2-32 per pixel: the default output is int16 (rounded, with a note saying what that
    costs); ``--dtype float32`` writes the same reconstruction unrounded, in the same units."""
    import mrcfile

    rng = np.random.default_rng(3)
    clean = 2 + 30 * np.linspace(0, 1, 64)[None, :] * np.ones((64, 1))
    f = tmp_path / "counts.mrc"
    with mrcfile.new(f) as m:
        m.set_data(np.stack([rng.poisson(clean) for _ in range(4)]).astype(np.int16))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {patch_size: 16, num_patches: 8, val_fraction: 0.25}\n"
                   "physics: {name: denoising, noise: {name: poisson, args: {gain: auto}}}\n"
                   "losses: [{name: sure, args: {noise: poisson}}]\n")
    assert main(["fit", "--config", str(cfg), "--data.path", str(f), "--trainer.output_dir", str(tmp_path / "r"),
                 *TINY]) == 0
    ck = str(tmp_path / "r" / "checkpoints" / "last.ckpt")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", ck, "--input", str(f), "--output", str(tmp_path / "i")]) == 0
    assert "--dtype float32 writes them unrounded" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", ck, "--input", str(f), "--output", str(tmp_path / "f"),
                 "--dtype", "float32"]) == 0
    assert "unrounded" not in capsys.readouterr().out
    rounded, unrounded = mrcfile.read(tmp_path / "i" / "counts.mrc"), mrcfile.read(tmp_path / "f" / "counts.mrc")
    assert rounded.dtype == np.int16 and unrounded.dtype == np.float32
    assert np.abs(unrounded - np.round(unrounded)).max() > 0.1  # not integers
    assert np.array_equal(np.clip(np.rint(unrounded), -32768, 32767).astype(np.int16), rounded)
