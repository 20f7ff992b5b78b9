"""``selfinv.data.writers.write_stack``: the dtypes and headers viewers read."""

from __future__ import annotations

import numpy as np
import pytest

from selfinv.data.writers import STACK_EXTENSIONS, png_unfit, write_stack


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_tiff_floats_are_float32(dtype, tmp_path):
    """ImageJ reads no 64- or 16-bit float TIFF: floats are written as float32 (values kept to float32)."""
    import tifffile

    a = np.linspace(-1000.5, 3000.25, 2 * 16 * 16).reshape(2, 1, 16, 16).astype(dtype)
    out = tifffile.imread(write_stack(tmp_path / "x.tif", a))
    assert out.dtype == np.float32 and out.shape == (2, 16, 16)
    np.testing.assert_array_equal(out, a[:, 0].astype(np.float32))
    ints = np.arange(256, dtype=np.uint16).reshape(1, 1, 16, 16)
    assert tifffile.imread(write_stack(tmp_path / "u.tif", ints)).dtype == np.uint16  # integers kept


@pytest.mark.parametrize("z, expected", [(None, 2.0), (0.0, 2.0), (5.0, 5.0)])
def test_mrc_z_voxel_size_is_never_zero(z, expected, tmp_path):
    """No (or a zero) Z spacing: the voxel is as deep as it is wide; a known one is written."""
    import mrcfile

    px = {"x": 2.0, "y": 3.0, "z": z, "unit": "nm", "imagej": False}
    path = write_stack(tmp_path / "x.mrc", np.zeros((3, 1, 8, 8), np.float32), px)
    with mrcfile.open(path) as m:
        vx = m.voxel_size
    assert (float(vx.x), float(vx.y), float(vx.z)) == pytest.approx((20.0, 30.0, 10 * expected))


def test_png_holds_gray_8_16_bit_and_8_bit_rgb(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (1, 3, 8, 10), dtype=np.uint8)
    back = np.asarray(Image.open(write_stack(tmp_path / "rgb.png", rgb)))
    np.testing.assert_array_equal(back, rgb[0].transpose(1, 2, 0))
    assert png_unfit(np.uint16, (1, 1, 8, 8)) is None and png_unfit(np.uint8, (1, 3, 8, 8)) is None
    assert png_unfit(np.uint16, (3, 1, 8, 8)) == "a stack of 3 images"
    assert png_unfit(np.float32, (1, 1, 8, 8)).startswith("float32 data")
    assert png_unfit(np.int32, (1, 1, 8, 8)).startswith("int32 data")
    assert png_unfit(np.uint16, (1, 3, 8, 8)).startswith("16-bit RGB")
    with pytest.raises(ValueError, match=r"x.png: PNG cannot hold float32 data .*use --format tiff"):
        write_stack(tmp_path / "x.png", np.zeros((1, 1, 8, 8), np.float32))


def test_unknown_extension_lists_the_extensions_written(tmp_path):
    with pytest.raises(ValueError) as e:
        write_stack(tmp_path / "x.xyz", np.zeros((1, 1, 8, 8), np.float32))
    assert "'.xyz'" in str(e.value) and " ".join(STACK_EXTENSIONS) in str(e.value)
    assert {".tif", ".png", ".npy", ".mrc", ".mrcs", ".fits"} <= set(STACK_EXTENSIONS)
