"""selfinv.data readers and writers, each on a small file written here."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from selfinv.data import denormalize, read_image, read_measurements, write_image
from selfinv.data.readers import SUPPORTED_EXTENSIONS, _lazy


def _ints(shape, seed=0, high=256, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


# -- raster images -----------------------------------------------------------------------
def test_png_folder_natural_order_and_dtype_scaling(tmp_path):
    from PIL import Image
    arrays = {name: _ints((6, 7), seed=i) for i, name in enumerate(["img10.png", "img2.png", "img1.png"])}
    for name, a in arrays.items():
        Image.fromarray(a).save(tmp_path / name)
    data, meta = read_measurements(tmp_path)
    assert data.shape == (3, 1, 6, 7) and data.dtype == torch.float32
    assert meta["files"] == ["img1.png", "img2.png", "img10.png"]
    for k, name in enumerate(meta["files"]):
        assert torch.equal(data[k, 0], torch.from_numpy(arrays[name].astype(np.float32) / 255))
    assert meta["normalization"] == {"mode": "dtype", "offset": 0.0, "scale": 255.0}
    raw = denormalize(data, meta)
    assert torch.equal(raw.round(), raw) and torch.allclose(raw[2, 0], torch.from_numpy(arrays["img10.png"]).float())


def test_rgb_png_and_gray_conversion(tmp_path):
    from PIL import Image
    a = _ints((5, 4, 3))
    Image.fromarray(a).save(tmp_path / "rgb.png")
    data, _ = read_image(tmp_path / "rgb.png")
    assert data.shape == (1, 3, 5, 4)
    assert torch.equal(data[0], torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 255))
    gray, meta = read_image(tmp_path / "rgb.png", as_gray=True)
    from skimage.color import rgb2gray
    assert gray.shape == (1, 1, 5, 4) and meta["converted_to_gray"]
    assert torch.allclose(gray[0, 0], torch.from_numpy(rgb2gray(a).astype(np.float32)), atol=1e-6)


def test_folder_errors(tmp_path):
    from PIL import Image
    with pytest.raises(ValueError, match="empty"):
        read_measurements(tmp_path)
    Image.fromarray(_ints((6, 7))).save(tmp_path / "a.png")
    Image.fromarray(_ints((6, 8))).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match="different sizes"):
        read_measurements(tmp_path)
    (tmp_path / "b.png").unlink()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"unsupported.*\.png.*\.dcm"):
        read_measurements(tmp_path)
    with pytest.raises(ValueError, match="supported"):
        read_image(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        read_measurements(tmp_path / "missing")
    assert ".h5" in SUPPORTED_EXTENSIONS and ".mrc" in SUPPORTED_EXTENSIONS


def test_png_writer_8_and_16_bit(tmp_path):
    x = torch.rand(1, 1, 9, 11, generator=torch.Generator().manual_seed(0))
    for bits in (8, 16):
        path = write_image(tmp_path / f"x{bits}.png", x, bit_depth=bits)
        back, meta = read_image(path)
        assert meta["original_dtype"] == ("uint8" if bits == 8 else "uint16")
        # quantisation: |error| <= half a level (+ float32 rounding)
        assert float((back - x).abs().max()) <= 0.5 / (2**bits - 1) + 1e-6
    write_image(tmp_path / "clip.png", torch.tensor([[-1.0, 0.5, 2.0]]))
    clip = read_image(tmp_path / "clip.png").data.flatten()
    assert torch.equal(clip, torch.tensor([0.0, 128 / 255, 1.0], dtype=torch.float32))  # round(0.5*255)=128
    write_image(tmp_path / "range.png", torch.tensor([[-1.0, 1.0]]), value_range=(-1, 1))
    assert read_image(tmp_path / "range.png").data.flatten().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=".tif"):
        write_image(tmp_path / "stack.png", torch.rand(2, 1, 4, 4))


# -- TIFF, NPY, NPZ -----------------------------------------------------------------------
def test_multipage_tiff_and_float_writer(tmp_path):
    import tifffile
    stack = np.random.default_rng(0).normal(size=(4, 8, 9)).astype(np.float32)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")  # a microscope stack
    data, meta = read_image(tmp_path / "stack.tif")
    assert data.shape == (4, 1, 8, 9) and torch.equal(data[:, 0], torch.from_numpy(stack))
    assert meta["normalization"]["scale"] == 1.0  # float data untouched by "dtype"
    # our writer keeps float32 exactly, including a (N, C, H, W) stack
    x = torch.randn(3, 1, 5, 6, generator=torch.Generator().manual_seed(1))
    back, _ = read_image(write_image(tmp_path / "x.tiff", x))
    assert torch.equal(back, x)
    x2 = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(2))
    assert torch.equal(read_image(write_image(tmp_path / "x2.tif", x2)).data, x2)
    assert torch.equal(read_image(write_image(tmp_path / "x3.tif", x2[0])).data, x2[:1])
    rgb = _ints((5, 6, 3))
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    data, meta = read_image(tmp_path / "rgb.tif")
    assert data.shape == (1, 3, 5, 6) and "S" in meta["axes"]
    assert torch.equal(data[0], torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255))


def test_npy_layouts_complex_and_writer(tmp_path):
    a = np.random.default_rng(0).normal(size=(3, 6, 5)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    assert torch.equal(read_image(tmp_path / "a.npy").data[:, 0], torch.from_numpy(a))
    c = (a + 1j * a[::-1]).astype(np.complex64)
    np.save(tmp_path / "c.npy", c)
    data, _ = read_image(tmp_path / "c.npy")
    assert data.shape == (3, 2, 6, 5)
    assert torch.equal(data[:, 0], torch.from_numpy(c.real)) and torch.equal(data[:, 1], torch.from_numpy(c.imag))
    x = torch.rand(2, 1, 4, 4)
    back, _ = read_image(write_image(tmp_path / "w.npy", x))
    assert torch.equal(back, x)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):  # allow_pickle=False: never unpickles
        read_image(tmp_path / "obj.npy")


def test_npz_key_choice(tmp_path):
    a, b = np.ones((2, 4, 4), np.float32), np.zeros((4, 4), np.float32)
    np.savez(tmp_path / "two.npz", meas=a, other=b)
    with pytest.raises(ValueError, match="key="):
        read_image(tmp_path / "two.npz")
    assert read_image(tmp_path / "two.npz", key="meas").data.shape == (2, 1, 4, 4)
    assert read_image(tmp_path / "two.npz", key="other").data.shape == (1, 1, 4, 4)
    with pytest.raises(ValueError, match="meas"):
        read_image(tmp_path / "two.npz", key="nope")


def test_normalization_modes_are_invertible(tmp_path):
    a = np.random.default_rng(3).normal(5.0, 2.0, size=(2, 10, 10)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    ref = torch.from_numpy(a)[:, None]
    for mode in ("none", "max", "percentile", "minmax"):
        data, meta = read_image(tmp_path / "a.npy", normalize=mode)
        assert torch.allclose(denormalize(data, meta), ref, atol=1e-5)  # float32 rounding of values ~10
    data, _ = read_image(tmp_path / "a.npy", normalize="minmax")
    assert float(data.min()) == 0.0 and abs(float(data.max()) - 1.0) < 1e-6
    data, _ = read_image(tmp_path / "a.npy", normalize="max")
    assert abs(float(data.abs().max()) - 1.0) < 1e-6
    with pytest.raises(ValueError, match="normalize"):
        read_image(tmp_path / "a.npy", normalize="zscore")


# -- HDF5 (fastMRI), MRC, DICOM ------------------------------------------------------------
def test_fastmri_hdf5(tmp_path):
    import h5py
    rng = np.random.default_rng(0)
    k = (rng.normal(size=(3, 8, 6)) + 1j * rng.normal(size=(3, 8, 6))).astype(np.complex64)
    rss = np.abs(rng.normal(size=(3, 8, 6))).astype(np.float32)
    with h5py.File(tmp_path / "file1000.h5", "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("reconstruction_rss", data=rss)
        f.attrs["acquisition"] = "CORPD_FBK"
    data, meta = read_image(tmp_path / "file1000.h5")
    assert data.shape == (3, 2, 8, 6) and meta["key"] == "kspace"
    assert torch.equal(data[:, 0], torch.from_numpy(k.real)) and torch.equal(data[:, 1], torch.from_numpy(k.imag))
    assert meta["attrs"]["acquisition"] == "CORPD_FBK"
    data, _ = read_image(tmp_path / "file1000.h5", key="reconstruction_rss")
    assert data.shape == (3, 1, 8, 6) and torch.equal(data[:, 0], torch.from_numpy(rss))
    with h5py.File(tmp_path / "multicoil.h5", "w") as f:  # coils compressed to one virtual coil per slice
        f.create_dataset("kspace", data=np.ones((2, 4, 8, 6), np.complex64))
    with pytest.warns(UserWarning, match="the 4 receive coils of each slice are compressed to one virtual coil"):
        data, meta = read_image(tmp_path / "multicoil.h5")
    assert data.shape == (2, 2, 8, 6) and meta["coil_compression"] == {"coils": 4, "energy_kept": [1.0, 1.0]}
    # a folder of volumes is concatenated along the slices
    (tmp_path / "multicoil.h5").unlink()
    (tmp_path / "sub").mkdir()
    assert read_measurements(tmp_path).data.shape == (3, 2, 8, 6)


def test_mrc_micrograph_stack(tmp_path):
    import mrcfile
    stack = np.random.default_rng(0).normal(size=(2, 10, 12)).astype(np.float32)
    with mrcfile.new(tmp_path / "mic.mrc") as m:
        m.set_data(stack)
        m.voxel_size = 1.5
    data, meta = read_image(tmp_path / "mic.mrc")
    assert data.shape == (2, 1, 10, 12) and torch.equal(data[:, 0], torch.from_numpy(stack))
    assert meta["voxel_size_angstrom"][0] == pytest.approx(1.5)


def _write_dicom(path, pixels, instance, z, slope=2.0, intercept=-100.0):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # pydicom 2.x
        ds.save_as(str(path), write_like_original=False)
    return pydicom


def test_dicom_series_sorted_and_rescaled(tmp_path):
    slices = [_ints((6, 5), seed=s, high=4000, dtype=np.uint16) for s in range(3)]
    # file names in the opposite order of the slice positions: sorting must use the position
    for s, name in zip(range(3), ["c.dcm", "b.dcm", "a.dcm"], strict=True):
        _write_dicom(tmp_path / name, slices[s], instance=s + 1, z=2.5 * s)
    data, meta = read_measurements(tmp_path)
    assert data.shape == (3, 1, 6, 5) and meta["sorted_by"] == "ImagePositionPatient"
    assert meta["files"] == ["c.dcm", "b.dcm", "a.dcm"] and meta["modality"] == "CT"
    for s in range(3):  # values are slope * stored + intercept (Hounsfield units), unscaled
        assert torch.equal(data[s, 0], torch.from_numpy(slices[s].astype(np.float32) * 2 - 100))
    one, m1 = read_image(tmp_path / "b.dcm")
    assert torch.equal(one, data[1:2]) and m1["pixel_spacing"] == [0.5, 0.5]
    # a DICOM file without extension is recognised by its 'DICM' preamble
    (tmp_path / "b.dcm").rename(tmp_path / "IM0001")
    assert torch.equal(read_image(tmp_path / "IM0001").data, data[1:2])


def test_dicom_writer_round_trips_the_units_and_keeps_the_header(tmp_path):
    """write_dicom stores round((v - intercept) / slope) in the template's pixel type: values on the stored grid
    come back exactly, in the template's units; the header (geometry, study) is the template's, the instance new."""
    import pydicom

    from selfinv.data.readers import read_raw
    from selfinv.data.writers import write_dicom

    _write_dicom(tmp_path / "in.dcm", _ints((6, 5), seed=0, high=4000, dtype=np.uint16), instance=7, z=3.0)
    src = pydicom.dcmread(tmp_path / "in.dcm")
    values = _ints((1, 6, 5), seed=1, high=4000, dtype=np.uint16) * 2.0 - 100  # on the stored grid
    write_dicom(tmp_path / "out.dcm", values + 0.4, tmp_path / "in.dcm", "1.2.3.4", description="selfinv test")
    back, meta = read_raw(tmp_path / "out.dcm")
    np.testing.assert_array_equal(back[0, 0], values[0])
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.SeriesInstanceUID == "1.2.3.4" and out.SOPInstanceUID != src.SOPInstanceUID
    assert float(out.ImagePositionPatient[2]) == 3.0 and out.InstanceNumber == 7 and meta["pixel_spacing"] == [0.5, 0.5]
    assert out.SeriesDescription == "selfinv test" and out.SourceImageSequence[0].ReferencedSOPInstanceUID == \
        src.SOPInstanceUID
    # a super-resolved image: its own size and pixel spacing
    write_dicom(tmp_path / "sr.dcm", np.zeros((1, 12, 10)), tmp_path / "in.dcm", "1.2.3.5",
                pixel_size={"x": 0.25, "y": 0.25, "unit": "mm"})
    sr = pydicom.dcmread(tmp_path / "sr.dcm")
    assert (sr.Rows, sr.Columns) == (12, 10) and [float(v) for v in sr.PixelSpacing] == [0.25, 0.25]
    # the same field of view: the first pixel's centre moves from (0, 0) by -(0.5 - 0.25) / 2 along x and y
    assert [float(v) for v in sr.ImagePositionPatient] == [-0.125, -0.125, 3.0]


def test_dicom_writer_clips_to_bits_stored_and_says_so(tmp_path):
    import pydicom

    from selfinv.data.writers import write_dicom

    _write_dicom(tmp_path / "in.dcm", np.full((4, 4), 1124.0), instance=1, z=0.0, slope=1.0, intercept=-1024.0)
    ds = pydicom.dcmread(tmp_path / "in.dcm")
    ds.BitsStored, ds.HighBit = 12, 11  # stored 0..4095: -1024..3071 in Hounsfield units
    ds.save_as(tmp_path / "in12.dcm")
    v = np.full((1, 4, 4), 100.0)
    v[0, 0, :2] = [-2000.0, 5000.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing clipped: no warning
        write_dicom(tmp_path / "quiet.dcm", v[:, 1:], tmp_path / "in12.dcm", "1.2")
    with pytest.warns(UserWarning, match=r"2 of 16 pixels .* \(-1024 to 3071 in its units\) where the input did not"):
        write_dicom(tmp_path / "out.dcm", v, tmp_path / "in12.dcm", "1.2")
    hu = pydicom.dcmread(tmp_path / "out.dcm").pixel_array.astype(float) - 1024
    assert hu[0, 0] == -1024 and hu[0, 1] == 3071 and hu[1, 1] == 100
    # where the input already sits at the limits (air at -1024 HU, saturation), clipping is expected: no warning
    ds.PixelData = np.where(np.arange(16).reshape(4, 4) < 2, [[0, 4095, 0, 0]], 1124).astype(np.uint16).tobytes()
    ds.save_as(tmp_path / "floor.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_dicom(tmp_path / "floor_out.dcm", v, tmp_path / "floor.dcm", "1.2")
    assert (pydicom.dcmread(tmp_path / "floor_out.dcm").pixel_array[0, :2] == [0, 4095]).all()


def test_dicom_writer_multiframe_and_big_endian_templates(tmp_path):
    """A 3-frame MR made here from pydicom's bundled MR_small.dcm (one file, all frames back) and the bundled
    big-endian MR_small_bigendian.dcm (re-encoded little endian). Only files inside pydicom's wheel: nothing
    may be downloaded."""
    import pydicom
    import pydicom.data

    from selfinv.data.writers import write_dicom

    single = pydicom.data.get_testdata_file("MR_small.dcm")
    ds = pydicom.dcmread(single)
    frames = np.stack([ds.pixel_array, ds.pixel_array[::-1], ds.pixel_array[:, ::-1]])
    ds.set_pixel_data(frames, "MONOCHROME2", int(ds.BitsStored))
    ds.save_as(tmp_path / "multi.dcm")
    for src in (tmp_path / "multi.dcm", pydicom.data.get_testdata_file("MR_small_bigendian.dcm")):
        frames = pydicom.dcmread(src).pixel_array.astype(np.float64)
        frames = frames if frames.ndim == 3 else frames[None]
        out = write_dicom(tmp_path / ("out_" + Path(src).name), frames[:, ::-1], src, "1.2.3")
        back = pydicom.dcmread(out)
        assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert int(getattr(back, "NumberOfFrames", 1) or 1) == frames.shape[0]
        np.testing.assert_array_equal(back.pixel_array.reshape(frames.shape), frames[:, ::-1])


def _enhanced_mr(path, frames: np.ndarray, intercepts: list[float], spacing: float):
    """An enhanced (multi-frame) MR made from pydicom's bundled MR_small.dcm: rescale, pixel spacing and plane
    positions only in the functional groups, as scanners write them (no top-level Rescale* or PixelSpacing)."""
    import pydicom
    import pydicom.data
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    for tag in ("RescaleSlope", "RescaleIntercept", "PixelSpacing", "ImagePositionPatient",
                "ImageOrientationPatient", "SliceThickness"):
        if tag in ds:
            del ds[tag]
    ds.set_pixel_data(frames, "MONOCHROME2", int(ds.BitsStored))

    def item(**macros):
        out = Dataset()
        for name, values in macros.items():
            macro = Dataset()
            for k, v in values.items():
                setattr(macro, k, v)
            setattr(out, name, [macro])
        return out

    ds.SharedFunctionalGroupsSequence = [item(
        PixelMeasuresSequence={"PixelSpacing": [spacing, spacing], "SliceThickness": 3.0},
        PlaneOrientationSequence={"ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]})]
    ds.PerFrameFunctionalGroupsSequence = [item(
        PixelValueTransformationSequence={"RescaleSlope": 2.0, "RescaleIntercept": b, "RescaleType": "US"},
        PlanePositionSequence={"ImagePositionPatient": [0.0, 0.0, 3.0 * f]},
        FrameContentSequence={"InStackPositionNumber": f + 1}) for f, b in enumerate(intercepts)]
    ds.save_as(path, enforce_file_format=True)


def test_dicom_enhanced_multiframe_units_and_geometry_come_from_the_functional_groups(tmp_path):
    """Enhanced CT/MR objects keep the rescale and pixel spacing per frame in functional groups: read in the
    object's units (stored * slope + each frame's intercept) with its pixel spacing; written back with the same
    per-frame rescale, and a resized output updates the spacing and each frame's position where they are kept."""
    import pydicom

    from selfinv.data.readers import read_raw
    from selfinv.data.writers import write_dicom

    stored = np.stack([_ints((64, 64), seed=s, high=3000, dtype=np.uint16) for s in range(2)]).astype(np.int16)
    _enhanced_mr(tmp_path / "enh.dcm", stored, intercepts=[-1000.0, 10.0], spacing=0.5)
    values, meta = read_raw(tmp_path / "enh.dcm")
    np.testing.assert_array_equal(values[:, 0], stored * 2.0 + np.array([-1000.0, 10.0])[:, None, None])
    assert meta["pixel_spacing"] == [0.5, 0.5] and meta["pixel_size"]["z"] == 3.0
    assert meta["rescale"] == [[2.0, -1000.0], [2.0, 10.0]]
    out = write_dicom(tmp_path / "out.dcm", values[:, 0, ::-1], tmp_path / "enh.dcm", "1.2.3")
    back, _ = read_raw(out)
    np.testing.assert_array_equal(back[:, 0], values[:, 0, ::-1])
    np.testing.assert_array_equal(pydicom.dcmread(out).pixel_array, stored[:, ::-1])  # same stored grid
    # a super-resolved output (2x): spacing 0.25 in the functional group, no top-level PixelSpacing added,
    # each frame's first-pixel centre moved by -(0.5 - 0.25) / 2 along x and y
    write_dicom(tmp_path / "sr.dcm", np.zeros((2, 128, 128)), tmp_path / "enh.dcm", "1.2.4",
                pixel_size={"x": 0.25, "y": 0.25, "unit": "mm"})
    sr = pydicom.dcmread(tmp_path / "sr.dcm")
    assert "PixelSpacing" not in sr and [float(v) for v in
                                        sr.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing] \
        == [0.25, 0.25]
    assert [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
            for f in sr.PerFrameFunctionalGroupsSequence] == [[-0.125, -0.125, 0.0], [-0.125, -0.125, 3.0]]
    assert read_raw(tmp_path / "sr.dcm")[1]["pixel_spacing"] == [0.25, 0.25]


def test_dicom_palette_colour_and_files_without_a_preamble(tmp_path):
    """A PALETTE COLOR image (ultrasound, secondary capture) is read as the RGB its colour table gives, not as the
    table's indices, and written back as an RGB DICOM image; a .dcm written without the 128-byte preamble and
    file meta header (old exports) is read, and written back as a proper DICOM file."""
    import pydicom
    import pydicom.data

    from selfinv.data.readers import read_raw
    from selfinv.data.writers import write_dicom

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    index = (np.arange(64 * 64).reshape(64, 64) % 4).astype(np.uint8)
    ds.set_pixel_data(index, "MONOCHROME2", 8)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    table = {"Red": [0, 65535, 0, 0], "Green": [0, 0, 65535, 0], "Blue": [0, 0, 0, 65535]}
    for colour, entries in table.items():
        ds.add_new(pydicom.datadict.tag_for_keyword(f"{colour}PaletteColorLookupTableDescriptor"), "US", [4, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", np.array(entries, dtype="<u2").tobytes())
    ds.save_as(tmp_path / "palette.dcm")
    rgb, _ = read_raw(tmp_path / "palette.dcm")
    assert rgb.shape == (1, 3, 64, 64)
    np.testing.assert_array_equal(rgb[0, :, 0, :4], np.array(list(table.values())))
    # written back as RGB of the table's 16 bits (the colour table no longer applies to new pixels)
    with pytest.raises(ValueError, match="colour DICOM image: write_dicom expects RGB frames"):
        write_dicom(tmp_path / "out.dcm", np.zeros((1, 64, 64)), tmp_path / "palette.dcm", "1.2")
    out = write_dicom(tmp_path / "out.dcm", rgb + 0.4, tmp_path / "palette.dcm", "1.2")
    back = pydicom.dcmread(out)
    assert (back.PhotometricInterpretation, back.SamplesPerPixel, back.BitsStored) == ("RGB", 3, 16)
    assert not [e for e in back if "PaletteColorLookupTable" in e.keyword]
    np.testing.assert_array_equal(read_raw(out)[0], rgb)

    mr = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    bare = tmp_path / "bare.dcm"
    mr_bare = pydicom.Dataset(mr)  # no preamble, no file meta: the data set from the first byte
    mr_bare.file_meta = pydicom.dataset.FileMetaDataset()
    pydicom.dcmwrite(bare, mr_bare, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert open(bare, "rb").read(132)[128:132] != b"DICM"
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(bare)
    values, _ = read_raw(bare)
    np.testing.assert_array_equal(values[0, 0], mr.pixel_array)
    out = write_dicom(tmp_path / "bare_out.dcm", values[:, 0, ::-1].astype(np.float64), bare, "1.2")
    np.testing.assert_array_equal(pydicom.dcmread(out).pixel_array, mr.pixel_array[::-1])


@pytest.mark.parametrize("name", ["examples_rgb_color.dcm", "SC_ybr_full_422_uncompressed.dcm",
                                  "SC_rgb_rle_2frame.dcm", "SC_rgb_rle_16bit.dcm", "ExplVR_BigEnd.dcm"])
def test_dicom_rgb_written_back_as_rgb_in_the_inputs_sample_range(tmp_path, name):
    """A colour DICOM image (RGB, YBR, run-length compressed, 16-bit samples, big endian) is read as RGB and its
    RGB reconstruction written back with its header: uncompressed RGB pixels in the input's sample range, the
    values rounded (read back = the input where nothing changed), one frame per input frame; values beyond the
    range clipped with a warning; grayscale frames refused with the shape expected."""
    import pydicom
    import pydicom.data

    from selfinv.data.readers import read_raw
    from selfinv.data.writers import write_dicom

    src = pydicom.data.get_testdata_file(name)
    rgb, _ = read_raw(src)
    template = pydicom.dcmread(src)
    frames = int(getattr(template, "NumberOfFrames", 1) or 1)
    assert rgb.shape == (frames, 3, int(template.Rows), int(template.Columns))
    out = write_dicom(tmp_path / "out.dcm", rgb - 0.3, src, "1.2.3")
    back = pydicom.dcmread(out)
    assert (back.PhotometricInterpretation, back.SamplesPerPixel, back.PlanarConfiguration) == ("RGB", 3, 0)
    assert (back.BitsAllocated, back.BitsStored) == (template.BitsAllocated, template.BitsStored)
    assert int(getattr(back, "NumberOfFrames", 1) or 1) == frames
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert back.SOPInstanceUID != template.SOPInstanceUID and back.SeriesInstanceUID == "1.2.3"
    np.testing.assert_array_equal(read_raw(out)[0], rgb)
    hi = 2 ** int(template.BitsStored) - 1
    bright = np.where(np.arange(rgb.shape[-1]) % 2 == 0, hi + 50.0, rgb)  # half the columns beyond the range
    assert (rgb[..., ::2] < hi).mean() > 0.1  # so the clipped pixels exceed the 1 % that warns
    with pytest.warns(UserWarning, match="clipped; --format tiff keeps them"):
        write_dicom(tmp_path / "bright.dcm", bright, src, "1.2.3")
    assert read_raw(tmp_path / "bright.dcm")[0].max() == hi
    with pytest.raises(ValueError, match=r"expects RGB frames \(F, 3, H, W\), got shape"):
        write_dicom(tmp_path / "gray.dcm", rgb[:, 0], src, "1.2.3")


def test_dicom_32_bit_rgb_refused_with_its_reason(tmp_path):
    import pydicom.data

    from selfinv.data.readers import read_raw
    from selfinv.data.writers import write_dicom

    src = pydicom.data.get_testdata_file("SC_rgb_rle_32bit.dcm")
    rgb, _ = read_raw(src)
    with pytest.raises(ValueError, match="8/16-bit RGB only \\(this file: 32-bit samples\\); use --format tiff"):
        write_dicom(tmp_path / "out.dcm", rgb, src, "1.2.3")


def test_dicom_rt_dose_in_dose_units_and_32_bit_output(tmp_path):
    """An RT dose grid (32-bit, no rescale, *Dose Grid Scaling* 1e-6) is read in dose units, not as stored
    integers, and a 32-bit template is a DICOM output: stored = value / scaling, in 32 bits, read back exactly."""
    import pydicom
    import pydicom.data

    from selfinv.data.readers import read_raw
    from selfinv.data.writers import write_dicom

    src = pydicom.data.get_testdata_file("rtdose.dcm")
    ds = pydicom.dcmread(src)
    assert ds.BitsAllocated == 32 and "RescaleSlope" not in ds and float(ds.DoseGridScaling) == 1e-6
    dose, _ = read_raw(src)
    assert dose.shape == (15, 1, 10, 10)
    np.testing.assert_allclose(dose[:, 0], ds.pixel_array * 1e-6, rtol=1e-12)
    out = write_dicom(tmp_path / "half.dcm", dose[:, 0] / 2, src, pydicom.uid.generate_uid())
    back = pydicom.dcmread(out)
    assert back.BitsAllocated == 32 and back.pixel_array.dtype == np.uint32 and back.NumberOfFrames == 15
    np.testing.assert_array_equal(back.pixel_array, np.rint(ds.pixel_array / 2).astype(np.uint32))
    again, _ = read_raw(out)
    np.testing.assert_allclose(again[:, 0], np.rint(ds.pixel_array / 2) * 1e-6, rtol=1e-12)


def test_dicom_objects_without_pixels_are_left_out_of_a_series(tmp_path):
    """A CD export's folder: two CT slices and a non-image DICOM object (a report: no pixel data) — the series
    is the two slices, with a warning naming the other file; a folder of non-images is an error."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    for z in range(2):
        _write_dicom(tmp_path / f"s{z}.dcm", _ints((6, 5), seed=z, high=4000, dtype=np.uint16), instance=z + 1, z=z)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report = FileDataset(str(tmp_path / "report.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    report.SOPClassUID, report.Modality = meta.MediaStorageSOPClassUID, "SR"
    report.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "report.dcm").Modality == "SR"
    with pytest.warns(UserWarning, match=r"report.dcm: 1 DICOM file\(s\) without pixel data"):
        data, meta_out = read_measurements(tmp_path)
    assert data.shape == (2, 1, 6, 5) and meta_out["files"] == ["s0.dcm", "s1.dcm"]
    (tmp_path / "s0.dcm").unlink()
    (tmp_path / "s1.dcm").unlink()
    with pytest.raises(ValueError, match="report.dcm: no pixel data: not an image"):
        read_measurements(tmp_path)


def test_missing_optional_dependency_message():
    with pytest.raises(ImportError, match=r"pip install selfinv\[formats\]"):
        _lazy("selfinv_no_such_module", "test files")


def test_pixel_size_survives_a_round_trip_through_the_writers(tmp_path):
    """What a reader finds of the pixel size (an ImageJ calibration, a TIFF resolution in cm, an MRC voxel size)
    the writer puts back into a file of the same format, and an MRC's into a TIFF (in pixels per cm)."""
    import mrcfile
    import tifffile

    from selfinv.data.readers import read_raw
    from selfinv.data.writers import write_stack

    a = (np.arange(2 * 16 * 16).reshape(2, 16, 16) % 251).astype(np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, resolution=(1 / 0.065, 1 / 0.065),
                     metadata={"spacing": 0.2, "unit": "um", "axes": "ZYX"})
    tifffile.imwrite(tmp_path / "cm.tif", a, photometric="minisblack", resolution=(2000.0, 2000.0),
                     resolutionunit=3)
    with mrcfile.new(tmp_path / "v.mrcs") as m:
        m.set_data(a.astype(np.float32))
        m.voxel_size = 1.06
    for name, expected in (("ij.tif", (0.065, "um", 0.2)), ("cm.tif", (5e-4, "cm", None)),
                           ("v.mrcs", (1.06, "angstrom", 1.06))):
        arr, meta = read_raw(tmp_path / name)
        px = meta["pixel_size"]
        assert px["x"] == pytest.approx(expected[0], rel=1e-5) and px["unit"] == expected[1], (name, px)
        assert (px["z"] is None) == (expected[2] is None) and (px["z"] or 0) == pytest.approx(expected[2] or 0)
        out = tmp_path / f"out_{name}"
        write_stack(out, arr, px)
        back = read_raw(out)[1]["pixel_size"]
        assert back["x"] == pytest.approx(px["x"], rel=1e-5) and back["y"] == pytest.approx(px["y"], rel=1e-5)
        assert back["unit"] == px["unit"] and back["imagej"] == px["imagej"], (name, back)
        assert (back["z"] or 0) == pytest.approx(px["z"] or 0, rel=1e-5)
    _, meta = read_raw(tmp_path / "v.mrcs")
    write_stack(tmp_path / "from_mrc.tif", read_raw(tmp_path / "v.mrcs")[0], meta["pixel_size"])
    back = read_raw(tmp_path / "from_mrc.tif")[1]["pixel_size"]
    assert back["unit"] == "cm" and back["x"] == pytest.approx(1.06e-8, rel=1e-5)
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, a, photometric="minisblack")
    assert "pixel_size" not in read_raw(plain)[1]


def test_tiff_hyperstack_and_unitless_resolution_survive_the_writers(tmp_path):
    """An ImageJ hyperstack with channels (ZCYX) comes back as a ZCYX hyperstack with its calibration, and a
    resolution in pixels per unstated unit (ResolutionUnit NONE) is written back, not dropped."""
    import tifffile

    from selfinv.data.readers import read_raw
    from selfinv.data.writers import write_stack

    a = (np.arange(3 * 2 * 16 * 12).reshape(3, 2, 16, 12) % 251).astype(np.uint16)
    tifffile.imwrite(tmp_path / "zcyx.tif", a, imagej=True, resolution=(1 / 0.1, 1 / 0.1),
                     metadata={"axes": "ZCYX", "unit": "um", "spacing": 0.5})
    tifffile.imwrite(tmp_path / "unitless.tif", a[:, 0], photometric="minisblack", resolution=(4.0, 4.0),
                     resolutionunit=1)
    for name, shape in (("zcyx.tif", (3, 2, 16, 12)), ("unitless.tif", (3, 16, 12))):
        arr, meta = read_raw(tmp_path / name)
        write_stack(tmp_path / f"out_{name}", arr, meta["pixel_size"])
        with tifffile.TiffFile(tmp_path / f"out_{name}") as tif:
            assert tif.series[0].shape == shape and tif.series[0].dtype == np.uint16, name
            np.testing.assert_array_equal(tif.series[0].asarray(), a if name == "zcyx.tif" else a[:, 0])
            if name == "zcyx.tif":
                assert tif.series[0].axes == "ZCYX" and tif.imagej_metadata["channels"] == 2
        assert read_raw(tmp_path / f"out_{name}")[1]["pixel_size"] == meta["pixel_size"], name
    assert read_raw(tmp_path / "unitless.tif")[1]["pixel_size"]["x"] == 0.25


def test_output_pixel_size_follows_the_field_of_view():
    """Super-resolution ×2 halves the pixel size (same field of view); the same size keeps it; none stays none."""
    from selfinv.data.writers import pixel_size_for

    px = {"x": 0.1, "y": 0.2, "z": 0.5, "unit": "um", "imagej": True}
    assert pixel_size_for(px, (64, 64), (128, 128)) == {**px, "x": 0.05, "y": 0.1}
    assert pixel_size_for(px, (64, 32), (64, 32)) == px
    assert pixel_size_for(None, (8, 8), (16, 16)) is None


def test_a_super_resolved_fits_keeps_the_structure_that_still_aligns(tmp_path):
    """A FITS file whose image (SCI) is reconstructed at twice its size: the WCS follows the finer pixels (the
    same sky: CRPIX' = (CRPIX - 0.5) 2 + 0.5, CDELT / 2), the primary header and the table are kept, and the
    error / quality planes of the input's size are dropped (they no longer align), as the HISTORY says."""
    from astropy.io import fits

    from selfinv.data.writers import write_stack

    h = fits.Header([("BUNIT", "ADU"), ("CTYPE1", "RA---TAN"), ("CRPIX1", 10.5), ("CDELT1", -2e-5),
                     ("CRPIX2", 8.0), ("CDELT2", 2e-5)])
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.arange(3.0))], name="CAT")
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("TELESCOP", "JWST")])),
                  fits.ImageHDU(np.zeros((16, 20), np.float32), header=h, name="SCI"),
                  fits.ImageHDU(np.ones((16, 20), np.float32), name="ERR"), table]).writeto(tmp_path / "in.fits")
    write_stack(tmp_path / "sr.fits", np.full((1, 1, 32, 40), 2.0, np.float32), header_from=tmp_path / "in.fits",
                history="selfinv predict")
    with fits.open(tmp_path / "sr.fits") as hdul:
        assert [x.name for x in hdul] == ["PRIMARY", "SCI", "CAT"] and hdul[0].header["TELESCOP"] == "JWST"
        sci = hdul["SCI"]
        assert sci.data.shape == (32, 40) and sci.header["BUNIT"] == "ADU"
        assert (sci.header["CRPIX1"], sci.header["CDELT1"], sci.header["CRPIX2"]) == (20.5, -1e-5, 15.5)
        assert "image HDUs [2] of the input's size dropped" in str(sci.header["HISTORY"]).replace("\n", "")
        np.testing.assert_array_equal(hdul["CAT"].data["flux"], np.arange(3.0))
