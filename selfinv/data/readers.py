"""Read a user's own measurements into float32 ``(N, C, H, W)`` tensors.

``read_measurements(path)`` takes a file or a folder; ``read_image(path)`` a single
file. Both dispatch on the extension and return ``ReadResult(data, metadata)``.

* ``.png .jpg .jpeg .bmp`` (Pillow): ``(H, W)`` -> ``(1, 1, H, W)``; RGB -> ``(1, 3, H, W)``
  (alpha dropped);
* ``.tif .tiff`` (tifffile): the first series; sample/channel axes (``S``, ``C``) -> ``C``,
  every other non-``YX`` axis -> ``N`` (multi-page stacks);
* ``.npy`` (numpy): ``(H, W)``, ``(N, H, W)`` or ``(N, C, H, W)``;
* ``.npz`` (numpy): one array, chosen with ``key`` (required if the file holds several);
* ``.h5 .hdf5`` (h5py): fastMRI, the ``kspace`` dataset, complex ``(slices, H, W)`` ->
  ``(slices, 2, H, W)``, with its ``mask`` in the metadata (multi-coil ``(slices, coils, H, W)``:
  compressed to one virtual coil per slice, ``compress_coils``, with a warning); or any dataset by ``key``;
* ``.mrc .mrcs .map`` (mrcfile): cryo-EM micrograph ``(H, W)`` or stack ``(N, H, W)``;
* ``.fits .fit .fts`` (astropy): the first HDU holding an image ``(H, W)`` or cube ``(N, H, W)``,
  ``BSCALE``/``BZERO`` applied (row 0 is FITS's first row, the bottom of the sky image);
* ``.dcm .dicom`` or DICOM files without extension (pydicom): one file, or a folder = a
  series sorted by slice position (``ImagePositionPatient`` along the slice normal), else
  ``InstanceNumber``, else file name; ``RescaleSlope``/``RescaleIntercept`` applied (per frame, from the
  functional groups, for enhanced multi-frame CT/MR objects).

A folder is read file by file in natural name order (``img2`` before ``img10``)
and concatenated along ``N``; all files must give the same ``(C, H, W)``.
Complex arrays become real 2-channel tensors (real, imaginary), the
convention of ``selfinv.physics.mri``; ``numpy`` files never unpickle
(``allow_pickle=False``).

**Normalisation** (``normalize=``), one ``offset`` and ``scale`` for the whole
data set (never per image, so noise statistics stay comparable), recorded in
``metadata["normalization"]`` and undone by ``denormalize``:
``x_stored = (x_raw - offset) / scale``.

* ``"dtype"`` (default): integer data divided by the type's maximum (uint8 / 255,
  uint16 / 65535...); floating/complex data unchanged. DICOM with a rescale
  (slope/intercept, e.g. CT in Hounsfield units) is floating after rescaling,
  hence unchanged.
* ``"none"``: unchanged.
* ``"max"``: divided by the maximum absolute value.
* ``"percentile"``: divided by the ``percentile``-th percentile of ``|x|``
  (default 99.9; not clipped).
* ``"minmax"``: mapped affinely to ``[0, 1]``. The offset breaks the linear model
  ``y = A x + n`` for anything but denoising: do not use it on k-space/sinograms.

A Gaussian ``sigma`` (or Poisson ``gain``) in raw units becomes ``sigma / scale``
(``gain / scale``) after normalisation.

h5py, mrcfile, pydicom and astropy are imported only when needed: ``pip install selfinv[formats]``.
"""

from __future__ import annotations

import json
import re
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch
from torch import Tensor

RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_EXTENSIONS = (".tif", ".tiff")
HDF5_EXTENSIONS = (".h5", ".hdf5")
MRC_EXTENSIONS = (".mrc", ".mrcs", ".map")
DICOM_EXTENSIONS = (".dcm", ".dicom")
FITS_EXTENSIONS = (".fits", ".fit", ".fts")
SUPPORTED_EXTENSIONS = (RASTER_EXTENSIONS + TIFF_EXTENSIONS + (".npy", ".npz") + HDF5_EXTENSIONS
                        + MRC_EXTENSIONS + DICOM_EXTENSIONS + FITS_EXTENSIONS)
NORMALIZATIONS = ("dtype", "none", "max", "percentile", "minmax")
RGB_TO_GRAY = (0.2125, 0.7154, 0.0721)  # ITU-R BT.709 luma, as skimage.color.rgb2gray


class ReadResult(NamedTuple):
    """``data``: float32 ``(N, C, H, W)``; ``metadata``: JSON-able description of the source."""

    data: Tensor
    metadata: dict[str, Any]


def _lazy(module: str, what: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"reading {what} needs the '{module}' package: pip install selfinv[formats] "
                          f"(or pip install {module})") from e


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    for kind, exts in (("raster", RASTER_EXTENSIONS), ("tiff", TIFF_EXTENSIONS), ("npy", (".npy",)),
                       ("npz", (".npz",)), ("hdf5", HDF5_EXTENSIONS), ("mrc", MRC_EXTENSIONS),
                       ("dicom", DICOM_EXTENSIONS), ("fits", FITS_EXTENSIONS)):
        if ext in exts:
            return kind
    return "dicom" if _is_dicom(path) else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 64 else f"array{v.shape}"
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


# -- array layout -------------------------------------------------------------------
def array_to_nchw(a: np.ndarray, source: str = "array") -> np.ndarray:
    """``(H, W)`` / ``(N, H, W)`` / ``(N, C, H, W)`` -> ``(N, C, H, W)``; complex -> 2 real channels."""
    a = np.asarray(a)
    if a.dtype == object:
        raise TypeError(f"{source}: object arrays are not supported (got dtype object)")
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a[:, None]
    elif a.ndim != 4:
        raise ValueError(f"{source}: expected an array (H, W), (N, H, W) or (N, C, H, W), got shape {a.shape}")
    if np.iscomplexobj(a):
        if a.shape[1] != 1:
            raise ValueError(
                f"{source}: complex data of shape {a.shape} has {a.shape[1]} channels/coils; only "
                "single-coil complex data (N, H, W) is supported (combine coils first)")
        a = np.concatenate([a.real, a.imag], axis=1)
    return a


def _stats(raw: np.ndarray) -> dict[str, Any]:
    return {"original_dtype": str(raw.dtype), "original_shape": list(raw.shape),
            "original_min": _jsonable(np.min(raw.real if np.iscomplexobj(raw) else raw)) if raw.size else None,
            "original_max": _jsonable(np.max(raw.real if np.iscomplexobj(raw) else raw)) if raw.size else None}


# -- per-format readers: return (array in its native layout converted to NCHW, metadata) --
def _read_raster(path: Path) -> tuple[np.ndarray, dict]:
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "RGBX"):
            im = im.convert("RGB")
        elif mode in ("1", "LA"):
            im = im.convert("L")
        a = np.array(im)
    meta = {"mode": mode, **_stats(a)}
    if a.ndim == 3:  # (H, W, C)
        return a.transpose(2, 0, 1)[None], meta
    return a[None, None], meta


def _read_tiff(path: Path) -> tuple[np.ndarray, dict]:
    tifffile = _lazy("tifffile", "TIFF files")
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes
        a = series.asarray()
        n_series = len(tif.series)
        pixel = _tiff_pixel_size(tif)
    meta = {"axes": axes, "n_series": n_series, **_stats(a)}
    if pixel is not None:
        meta["pixel_size"] = pixel
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"{path}: TIFF series axes '{axes}' have no Y and X")
    ch = [i for i, c in enumerate(axes) if c in "SC"]
    if len(ch) > 1:
        raise ValueError(f"{path}: TIFF axes '{axes}' have several channel axes")
    other = [i for i, c in enumerate(axes) if c not in "YXSC"]
    order = other + ch + [axes.index("Y"), axes.index("X")]
    a = a.transpose(order)
    H, W = a.shape[-2:]
    C = a.shape[-3] if ch else 1
    return array_to_nchw(a.reshape(-1, C, H, W), str(path)), meta


#: TIFF ResolutionUnit codes with a physical unit (``writers`` uses the same table)
TIFF_RESOLUTION_UNITS = {2: "inch", 3: "cm"}


def _tiff_pixel_size(tif) -> dict | None:
    """The pixel size of a TIFF's first page: ``{"x", "y", "z", "unit", "imagej"}`` from its XResolution /
    YResolution (pixels per unit) and, for ImageJ files, the ImageJ ``unit`` and ``spacing`` (z); None when the
    file states none (no resolution, or 1 pixel per unit without a unit)."""
    page = tif.pages[0]
    tags = page.tags
    xr, yr = tags.get("XResolution"), tags.get("YResolution")
    if xr is None or yr is None:
        return None

    def size(v) -> float:
        num, den = v if isinstance(v, tuple) else (v, 1)
        return float(den) / float(num) if num else 0.0

    x, y = size(xr.value), size(yr.value)
    ij = tif.imagej_metadata or {}
    unit = ij.get("unit") if tif.is_imagej else None
    if unit is None:
        code = tags.get("ResolutionUnit")
        unit = TIFF_RESOLUTION_UNITS.get(int(code.value)) if code is not None else None
    if not (x > 0 and y > 0) or (unit is None and x == 1 and y == 1):
        return None
    z = ij.get("spacing") if tif.is_imagej else None
    return {"x": x, "y": y, "z": float(z) if z is not None else None, "unit": unit, "imagej": bool(tif.is_imagej)}


def _read_npy(path: Path) -> tuple[np.ndarray, dict]:
    a = np.load(path, allow_pickle=False)
    return array_to_nchw(a, str(path)), _stats(a)


def _read_npz(path: Path, key: str | None) -> tuple[np.ndarray, dict]:
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        if key is None:
            if not keys:
                raise ValueError(f"{path} holds no array")
            if len(keys) != 1:
                raise ValueError(f"{path} holds several arrays {keys}; {_SEVERAL_ARRAYS_HINT.get()}")
            key = keys[0]
        if key not in keys:
            raise ValueError(f"{path} has no array '{key}'; available: {keys}")
        a = z[key]
    return array_to_nchw(a, f"{path}[{key}]"), {"key": key, **_stats(a)}


def compress_coils(kspace: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multi-coil k-space ``(S, C, H, W)`` -> one virtual coil per slice ``(S, H, W)``, and the fraction of
    each slice's k-space energy it keeps ``(S,)``.

    Software coil compression (Buehrer et al. 2007; Huang et al. 2008): the virtual coil is ``uᴴ k``, ``u``
    the leading eigenvector of the coils' ``C x C`` covariance ``k kᴴ`` of the slice. ``u`` has unit norm, so
    the virtual coil sees the same mask and, for white coil noise of level σ, white noise of level σ: it is a
    single-coil measurement (of the image weighted by the combined sensitivity ``Σ_c ū_c S_c``).

    Example::

        >>> k = np.ones((1, 2, 4, 4), np.complex64) * np.array([3, 4]).reshape(1, 2, 1, 1)
        >>> v, kept = compress_coils(k)
        >>> v.shape, np.allclose(np.abs(v), 5), np.allclose(kept, 1)
        ((1, 4, 4), True, True)
    """
    s, c = kspace.shape[:2]
    flat = kspace.reshape(s, c, -1)
    cov = flat @ flat.conj().transpose(0, 2, 1)  # (S, C, C), Hermitian
    values, vectors = np.linalg.eigh(cov.astype(np.complex128))
    u = vectors[:, :, -1]  # leading eigenvector (eigh sorts ascending)
    virtual = np.einsum("sc,scn->sn", u.conj(), flat).reshape(s, *kspace.shape[2:]).astype(kspace.dtype)
    total = values.real.sum(axis=1)
    kept = np.where(total > 0, values[:, -1].real / np.where(total > 0, total, 1), 1.0)
    return virtual, kept


def _read_hdf5(path: Path, key: str | None) -> tuple[np.ndarray, dict]:
    h5py = _lazy("h5py", "HDF5 files")
    with h5py.File(path, "r") as f:
        datasets: list[str] = []
        f.visititems(lambda k, o: datasets.append(k) if isinstance(o, h5py.Dataset) else None)
        if key is None:
            if "kspace" in f:
                key = "kspace"
            elif len(datasets) == 1:
                key = datasets[0]
            else:
                raise ValueError(f"{path} has no 'kspace' dataset and several datasets {datasets}; "
                                 f"{_SEVERAL_ARRAYS_HINT.get()}")
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise ValueError(f"{path} has no dataset '{key}'; available: {datasets}")
        a = f[key][()]
        attrs = {k: _jsonable(v) for k, v in f.attrs.items()}
        mask = np.asarray(f["mask"][()]) if key == "kspace" and "mask" in f else None
    if key == "kspace" and not np.iscomplexobj(a):
        raise ValueError(f"{path}: 'kspace' holds real values of dtype {a.dtype}; expected complex k-space")
    compression = None
    if key == "kspace" and 2 <= a.ndim <= 4 and _KEEP_COILS.get():  # (slices, coils, H, W), read coil by coil
        a = a.reshape((1,) * (4 - a.ndim) + a.shape) if a.ndim == 2 else a[:, None] if a.ndim == 3 else a
        meta = {"key": key, "attrs": attrs, "coils": int(a.shape[1]), **_stats(a)}
        if mask is not None:
            meta["mask"] = _checked_kspace_mask(mask, a, path)
        channels = np.stack([a.real, a.imag], axis=2).reshape(a.shape[0], 2 * a.shape[1], *a.shape[2:])
        return channels, meta
    if key == "kspace" and a.ndim == 4:  # (slices, coils, H, W)
        coils = a.shape[1]
        a, kept = compress_coils(a)
        compression = {"coils": coils, "energy_kept": [float(v) for v in kept]}
        warnings.warn(f"{path}: the {coils} receive coils of each slice are compressed to one virtual coil (SVD; "
                      f"{100 * float(kept.min()):.0f}-{100 * float(kept.max()):.0f} % of the k-space energy kept): "
                      f"the reconstruction is that virtual coil's image (physics.name: mri_multicoil reconstructs "
                      f"from every coil with its sensitivities)", UserWarning, stacklevel=2)
    meta = {"key": key, "attrs": attrs, **_stats(a)}
    if compression is not None:
        meta["coil_compression"] = compression
    if mask is not None:
        meta["mask"] = _checked_kspace_mask(mask, a, path)
    return array_to_nchw(a, f"{path}[{key}]"), meta


def _checked_kspace_mask(mask: np.ndarray, kspace: np.ndarray, path: Path) -> np.ndarray:
    if mask.ndim != 1 or mask.shape[0] != kspace.shape[-1]:
        raise ValueError(f"{path}: 'mask' has shape {mask.shape}; expected ({kspace.shape[-1]},), one entry per "
                         f"k-space column of 'kspace' {kspace.shape}")
    return mask.astype(np.float32)


def _read_mrc(path: Path) -> tuple[np.ndarray, dict]:
    mrcfile = _lazy("mrcfile", "MRC files")
    with mrcfile.open(path, mode="r", permissive=True) as m:
        if m.data is None:
            raise ValueError(f"{path}: MRC file has no data")
        a = np.array(m.data)
        vs = m.voxel_size
        voxel = [float(vs.x), float(vs.y), float(vs.z)]
    meta = {"voxel_size_angstrom": voxel, **_stats(a)}
    if any(voxel):
        meta["pixel_size"] = {"x": voxel[0], "y": voxel[1], "z": voxel[2], "unit": "angstrom", "imagej": False}
    return array_to_nchw(a, str(path)), meta


def fits_image_hdu(hdul, path: Path) -> int:
    """Index of the first HDU of an open FITS file holding an image (2-D or more): the one selfinv reads."""
    for i, hdu in enumerate(hdul):
        if getattr(hdu, "is_image", False) and hdu.header.get("NAXIS", 0) >= 2:
            return i
    raise ValueError(f"{path}: no image in this FITS file (its HDUs: "
                     f"{', '.join(type(h).__name__ for h in hdul)}); expected an image or cube HDU")


def _read_fits(path: Path) -> tuple[np.ndarray, dict]:
    fits = _lazy("astropy.io.fits", "FITS files")
    with fits.open(path, memmap=False) as hdul:
        k = fits_image_hdu(hdul, path)
        hdu = hdul[k]
        a = np.array(hdu.data)  # BSCALE / BZERO applied by astropy
        bunit = hdu.header.get("BUNIT")
    if a.ndim > 4:
        raise ValueError(f"{path}: FITS image of shape {a.shape}; expected (H, W), (N, H, W) or (N, C, H, W)")
    a = a.astype(a.dtype.newbyteorder("="))  # FITS is big-endian: native order for torch
    meta = {"hdu": k, "bunit": str(bunit) if bunit else None, **_stats(a)}
    return array_to_nchw(a, str(path)), meta


def dicom_frame_value(ds, group: str, keyword: str, frame: int = 0) -> Any:
    """The value of ``keyword`` for one frame of a DICOM object, or None.

    An enhanced (multi-frame) object keeps per-frame attributes in functional groups: the item ``frame`` of
    *Per-Frame Functional Groups Sequence*, else the one item of *Shared Functional Groups Sequence*, each
    holding the macro sequence ``group`` (e.g. ``PixelValueTransformationSequence`` for the rescale,
    ``PixelMeasuresSequence`` for the pixel spacing). A classic object has ``keyword`` at its top level.

    Example::

        >>> import pydicom.data, pydicom
        >>> ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
        >>> float(dicom_frame_value(ds, "PixelValueTransformationSequence", "RescaleIntercept"))
        -1024.0
    """
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items and len(items) > index:
            macro = items[index].get(group)
            if macro and keyword in macro[0]:
                return macro[0][keyword].value
    return ds[keyword].value if keyword in ds else None


def dicom_frame_count(ds) -> int:
    return int(getattr(ds, "NumberOfFrames", 1) or 1)


def dicom_rescale(ds) -> list[tuple[float, float]]:
    """``(RescaleSlope, RescaleIntercept)`` of every frame: stored value ``s`` means ``slope * s + intercept``
    in the object's units (Hounsfield units for CT; for an RT dose without a rescale, *Dose Grid Scaling*
    as the slope: gray or relative dose, *Dose Units*); ``(1, 0)`` where the object has none."""
    out = []
    dose_scaling = getattr(ds, "DoseGridScaling", None) if "RescaleSlope" not in ds else None
    for f in range(dicom_frame_count(ds)):
        slope = dicom_frame_value(ds, "PixelValueTransformationSequence", "RescaleSlope", f)
        if slope in (None, "") and dose_scaling not in (None, ""):
            slope = dose_scaling
        intercept = dicom_frame_value(ds, "PixelValueTransformationSequence", "RescaleIntercept", f)
        out.append((float(slope) if slope not in (None, "") and float(slope) != 0 else 1.0,
                    float(intercept) if intercept not in (None, "") else 0.0))
    return out


def dicom_pixel_spacing(ds) -> list[float] | None:
    """(between rows, between columns) in mm of the first frame (*Pixel Spacing*), or None."""
    v = dicom_frame_value(ds, "PixelMeasuresSequence", "PixelSpacing")
    spacing = [float(x) for x in v] if v not in (None, "") else []
    return spacing if len(spacing) == 2 and all(x > 0 for x in spacing) else None


def _dicom_pixels(ds, path: Path) -> np.ndarray:
    try:
        a = ds.pixel_array
    except Exception as e:  # compressed transfer syntaxes need extra handlers
        reason = str(e).splitlines()[0].rstrip(":")
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is not None and not getattr(syntax, "is_compressed", True):  # a decoder would not help
            raise ValueError(f"{path}: cannot read the DICOM pixel data, is the file truncated or damaged? "
                             f"({reason})") from e
        raise ValueError(f"{path}: cannot decode DICOM pixel data ({reason}); compressed DICOM needs a "
                         "decoder: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or gdcm)") from e
    if _is_palette(ds):  # stored values index a colour table: the image is the table's RGB
        from pydicom.pixels import apply_color_lut

        return apply_color_lut(a, ds)
    rescale = dicom_rescale(ds)
    if any(r != (1.0, 0.0) for r in rescale):
        a = a.astype(np.float64)
        frames = a.reshape(len(rescale), -1) if len(rescale) > 1 else a.reshape(1, -1)
        for f, (slope, intercept) in enumerate(rescale):
            frames[f] = frames[f] * slope + intercept
    return a


def _is_palette(ds) -> bool:
    return str(getattr(ds, "PhotometricInterpretation", "")).upper() == "PALETTE COLOR"


def _dicom_to_nchw(a: np.ndarray, ds, path: Path) -> np.ndarray:
    spp = 3 if _is_palette(ds) else int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if spp > 1:  # (..., H, W, C)
        a = np.moveaxis(a, -1, -3)
        return a.reshape(-1, spp, *a.shape[-2:])
    return array_to_nchw(a, str(path))


#: the elements that hold a DICOM image's pixels; objects without any (a DICOMDIR index, a structured report,
#: an RT plan, a presentation state) are not images
_DICOM_PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def dcmread(path: str | Path, stop_before_pixels: bool = False):
    """``pydicom.dcmread``, also for a ``.dcm`` file written without the 128-byte preamble and file meta header
    (old ACR-NEMA-style exports): read anyway, its transfer syntax the encoding the data set was found in."""
    pydicom, path = _lazy("pydicom", "DICOM files"), Path(path)
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except pydicom.errors.InvalidDicomError:
        if path.suffix.lower() not in DICOM_EXTENSIONS:
            raise
    ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
    if "Rows" not in ds:
        raise pydicom.errors.InvalidDicomError("no DICOM header ('DICM' prefix) and no image attributes")
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding[:2]
        ds.file_meta.TransferSyntaxUID = (pydicom.uid.ImplicitVRLittleEndian if implicit else
                                          pydicom.uid.ExplicitVRLittleEndian if little else
                                          pydicom.uid.ExplicitVRBigEndian)
    return ds


def _read_dicom_files(paths: list[Path]) -> tuple[np.ndarray, dict]:
    series = [(p, dcmread(p)) for p in paths]
    has_pixels = [any(e in ds for e in _DICOM_PIXEL_ELEMENTS) for _, ds in series]
    images = [item for item, keep in zip(series, has_pixels, strict=True) if keep]
    others = [p.name for (p, _), keep in zip(series, has_pixels, strict=True) if not keep]
    where = str(paths[0]) if len(paths) == 1 else f"{paths[0].parent}: {', '.join(others[:5])}" + \
        (f" and {len(others) - 5} more" if len(others) > 5 else "")
    if not images:
        dicomdir = any(str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")) ==
                       "1.2.840.10008.1.3.10" for _, ds in series)
        hint = ("; a DICOMDIR indexes the series stored in sub-folders: give the folder of one series"
                if dicomdir else "; expected DICOM image files")
        raise ValueError(f"{where}: no pixel data: not an image (a DICOMDIR index, a report, an RT object...)"
                         + hint)
    if others:
        warnings.warn(f"{where}: {len(others)} DICOM file(s) without pixel data (a DICOMDIR index, reports, RT "
                      f"objects) left out of the series", UserWarning, stacklevel=2)
    series = images
    order, how = _dicom_order(series)
    series = [series[i] for i in order]
    arrays = [_dicom_to_nchw(_dicom_pixels(ds, p), ds, p) for p, ds in series]
    uids = list(dict.fromkeys(str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in series))
    if len(uids) > 1 and len({a.shape[1:] for a in arrays}) > 1:
        described = [next(f"{getattr(ds, 'SeriesDescription', '') or p.name} ({a.shape[-2]}x{a.shape[-1]})"
                          for (p, ds), a in zip(series, arrays, strict=True)
                          if str(getattr(ds, "SeriesInstanceUID", "")) == u) for u in uids]
        raise ValueError(f"{series[0][0].parent} holds {len(uids)} DICOM series of different image sizes "
                         f"({'; '.join(described[:4])}); give the folder of one series")
    _check_same_size(arrays, [p for p, _ in series])
    a = np.concatenate(arrays)
    ds0 = series[0][1]
    meta = {"sorted_by": how, "files": [p.name for p, _ in series],
            # (file, frame) of every slice, in order: ``selfinv predict`` writes DICOM outputs with their headers
            "slice_origins": [(str(p), k) for (p, _), arr in zip(series, arrays, strict=True)
                              for k in range(arr.shape[0])],
            "modality": str(getattr(ds0, "Modality", "")),
            "pixel_spacing": dicom_pixel_spacing(ds0),
            "rescale": [list(r) for _, ds in series for r in dicom_rescale(ds)],  # per slice
            "stored_dtype": str(ds0.pixel_array.dtype), **_stats(a)}
    if meta["pixel_spacing"] and len(meta["pixel_spacing"]) == 2:  # DICOM: (row spacing, column spacing), mm
        thickness = dicom_frame_value(ds0, "PixelMeasuresSequence", "SliceThickness")
        meta["pixel_size"] = {"x": meta["pixel_spacing"][1], "y": meta["pixel_spacing"][0],
                              "z": float(thickness) if thickness not in (None, "") else None, "unit": "mm",
                              "imagej": False}
    return a, meta


def _dicom_order(series: list) -> tuple[list[int], str]:
    """Slice order: position along the slice normal, else InstanceNumber, else file name."""
    dss = [ds for _, ds in series]
    if len(dss) > 1 and all(hasattr(d, "ImagePositionPatient") and hasattr(d, "ImageOrientationPatient")
                            for d in dss):
        iop = np.array([float(v) for v in dss[0].ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        pos = [float(np.dot(normal, [float(v) for v in d.ImagePositionPatient])) for d in dss]
        if len(set(pos)) == len(pos):
            return sorted(range(len(dss)), key=lambda i: pos[i]), "ImagePositionPatient"
    inst = [getattr(d, "InstanceNumber", None) for d in dss]
    if all(v is not None for v in inst) and len(set(int(v) for v in inst)) == len(inst):
        return sorted(range(len(dss)), key=lambda i: int(inst[i])), "InstanceNumber"
    return sorted(range(len(dss)), key=lambda i: _natural_key(series[i][0])), "file name"


def _check_same_size(arrays: list[np.ndarray], paths: list[Path]) -> None:
    shapes = [a.shape[1:] for a in arrays]
    for p, s in zip(paths, shapes, strict=True):
        if s != shapes[0]:
            raise ValueError(f"images have different sizes: {paths[0].name} gives (C, H, W) = {tuple(shapes[0])} "
                             f"but {p.name} gives {tuple(s)}; crop or resize them to one size first")


def read_raw(path: str | Path, kind: str | None = None, key: str | None = None) -> tuple[np.ndarray, dict]:
    """One file in its own units: ``(N, C, H, W)`` array of the stored dtype (complex data as 2 real
    channels) and its metadata. A file the format's library cannot parse is a ``ValueError`` naming it."""
    path = Path(path)
    kind = kind or _kind(path)
    if kind is None:
        raise _unsupported(path)
    try:
        return _read_file(path, kind, key)
    except (ImportError, FileNotFoundError):
        raise
    except (ValueError, TypeError) as e:
        if str(path) in str(e) or path.name in str(e):
            raise
        raise ValueError(f"{path}: cannot read this {kind} file ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - parsers of damaged files raise anything (IndexError, struct.error...)
        raise ValueError(f"{path}: cannot read this {kind} file, is it damaged or truncated? "
                         f"({type(e).__name__}: {_first_line(e)})") from None


#: what to do about a file holding several arrays (NPZ, HDF5): the Python keyword by default, the running
#: command's own option on the command line (``several_arrays_hint``)
_SEVERAL_ARRAYS_HINT: ContextVar[str] = ContextVar("several_arrays_hint", default="choose one with key=NAME")


@contextmanager
def several_arrays_hint(text: str) -> Iterator[None]:
    """Inside the block, a file holding several arrays says ``text`` (e.g. ``choose one with --data.key NAME``,
    the running command's option) instead of naming the Python keyword ``key=NAME``."""
    token = _SEVERAL_ARRAYS_HINT.set(text)
    try:
        yield
    finally:
        _SEVERAL_ARRAYS_HINT.reset(token)


#: whether a multi-coil fastMRI ``kspace`` (slices, coils, H, W) is read coil by coil (``(slices, 2C, H, W)``,
#: for a physics that ``keeps_coils``) instead of compressed to one virtual coil (``compress_coils``)
_KEEP_COILS: ContextVar[bool] = ContextVar("keep_coils", default=False)


@contextmanager
def keeping_coils(keep: bool = True) -> Iterator[None]:
    """Inside the block, multi-coil k-space files are read coil by coil, 2 real channels per coil, with
    ``meta["coils"]`` (``keep=True``: the physics reconstructs from every coil, ``Physics.keeps_coils``)."""
    token = _KEEP_COILS.set(bool(keep))
    try:
        yield
    finally:
        _KEEP_COILS.reset(token)


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:160]


def list_folder(path: Path) -> list[tuple[Path, str]]:
    """The readable files of a folder as ``(path, kind)`` in natural name order (hidden files ignored)."""
    files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise ValueError(f"folder {path} is empty; expected image or measurement files "
                         f"({' '.join(SUPPORTED_EXTENSIONS)})")
    out, skipped = [], []
    for p in files:
        kind = _kind(p)
        if kind is None:
            skipped.append(p)
        else:
            out.append((p, kind))
    if not out:
        raise _unsupported(skipped[0])
    folders = [p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if skipped or folders:
        parts = []
        if skipped:
            names = ", ".join(p.name for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
            parts.append(f"{len(skipped)} file(s) that are not images or measurements ({names})")
        if folders:
            parts.append(f"{len(folders)} subfolder(s) (folders are not read recursively)")
        warnings.warn(f"folder {path}: read {len(out)} file(s), skipped {' and '.join(parts)}", stacklevel=2)
    return out


def read_dicom_series(paths: list[Path]) -> tuple[np.ndarray, dict]:
    """A DICOM series (files of one folder) as ``(N, C, H, W)`` in rescaled units, sorted by slice position."""
    try:
        return _read_dicom_files(paths)
    except (ValueError, TypeError, ImportError):
        raise
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read the DICOM series in {paths[0].parent} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None


def _read_file(path: Path, kind: str, key: str | None) -> tuple[np.ndarray, dict]:
    if kind == "raster":
        return _read_raster(path)
    if kind == "tiff":
        return _read_tiff(path)
    if kind == "npy":
        return _read_npy(path)
    if kind == "npz":
        return _read_npz(path, key)
    if kind == "hdf5":
        return _read_hdf5(path, key)
    if kind == "mrc":
        return _read_mrc(path)
    if kind == "dicom":
        return _read_dicom_files([path])
    if kind == "fits":
        return _read_fits(path)
    raise AssertionError(kind)


def _unsupported(path: Path) -> ValueError:
    return ValueError(f"unsupported file '{path.name}' (extension '{path.suffix}'); supported: "
                      f"{' '.join(SUPPORTED_EXTENSIONS)} or DICOM files without extension")


# -- normalisation ------------------------------------------------------------------
def _normalization(a: np.ndarray, raw_dtype: np.dtype, mode: str, percentile: float) -> dict[str, float]:
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got '{mode}'")
    offset, scale = 0.0, 1.0
    if mode == "dtype":
        if np.issubdtype(raw_dtype, np.integer):
            scale = float(np.iinfo(raw_dtype).max)
        elif raw_dtype == np.bool_:
            scale = 1.0
    elif mode == "max":
        scale = float(np.abs(a).max())
    elif mode == "percentile":
        scale = float(np.percentile(np.abs(a), percentile))
    elif mode == "minmax":
        offset, scale = float(a.min()), float(a.max() - a.min())
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"normalize='{mode}' gives scale {scale} (constant or all-zero data?); "
                         "use normalize='none'")
    return {"mode": mode, "offset": offset, "scale": scale}


def denormalize(data: Tensor, metadata: dict[str, Any]) -> Tensor:
    """Undo the reader's normalisation: ``x_raw = x_stored * scale + offset``."""
    n = metadata.get("normalization", metadata)
    return data * n["scale"] + n["offset"]


def _finish(a: np.ndarray, meta: dict, raw_dtype: np.dtype, normalize: str, percentile: float,
            as_gray: bool) -> ReadResult:
    if as_gray and a.shape[1] in (3, 4):
        w = np.asarray(RGB_TO_GRAY, dtype=np.float64).reshape(1, 3, 1, 1)
        a = (a[:, :3].astype(np.float64) * w).sum(1, keepdims=True)
        meta["converted_to_gray"] = True
    a = a.astype(np.float64)
    norm = _normalization(a, raw_dtype, normalize, percentile)
    out = ((a - norm["offset"]) / norm["scale"]).astype(np.float32)
    meta["normalization"] = norm
    return ReadResult(torch.from_numpy(np.ascontiguousarray(out)), _jsonable(meta))


def read_image(path: str | Path, *, key: str | None = None, normalize: str = "dtype",
               percentile: float = 99.9, as_gray: bool = False) -> ReadResult:
    """Read one file (any supported format) as float32 ``(N, C, H, W)`` plus metadata.

    ``key`` picks the array of an ``.npz`` or HDF5 file; ``as_gray`` converts RGB
    to one channel (BT.709 weights) before normalising. See the module doc.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    kind = _kind(path)
    if kind is None:
        raise _unsupported(path)
    a, meta = _read_file(path, kind, key)
    meta = {"source": str(path), "format": kind, **meta}
    return _finish(a, meta, np.dtype(meta["original_dtype"]), normalize, percentile, as_gray)


def read_measurements(path: str | Path, *, key: str | None = None, normalize: str = "dtype",
                      percentile: float = 99.9, as_gray: bool = False) -> ReadResult:
    """Read a file or a folder of files as float32 ``(N, C, H, W)`` plus metadata.

    A folder holds files of one format (PNG/JPEG and TIFF may be mixed), read in
    natural name order and concatenated; a folder of DICOM files is one series
    sorted by slice position. Hidden files are ignored. See the module doc for
    layouts and ``normalize``.
    """
    path = Path(path)
    if path.is_file():
        return read_image(path, key=key, normalize=normalize, percentile=percentile, as_gray=as_gray)
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or folder: {path}")
    files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise ValueError(f"folder {path} is empty; expected image or measurement files "
                         f"({' '.join(SUPPORTED_EXTENSIONS)})")
    kinds = {p: _kind(p) for p in files}
    unknown = [p for p, k in kinds.items() if k is None]
    if unknown:
        raise _unsupported(unknown[0])
    groups = {"image" if k in ("raster", "tiff") else k for k in kinds.values()}
    if len(groups) > 1:
        raise ValueError(f"folder {path} mixes formats {sorted(set(kinds.values()))}; put one kind of file per folder")
    if groups == {"dicom"}:
        a, meta = _read_dicom_files(files)
        meta = {"source": str(path), "format": "dicom", **meta}
        return _finish(a, meta, np.dtype(meta["original_dtype"]), normalize, percentile, as_gray)
    arrays, metas = [], []
    for p in files:
        a, m = _read_file(p, kinds[p], key)
        arrays.append(a)
        metas.append(m)
    _check_same_size(arrays, files)
    dtypes = sorted({m["original_dtype"] for m in metas})
    if len(dtypes) > 1 and normalize == "dtype":
        raise ValueError(f"folder {path} mixes data types {dtypes}; normalize='dtype' would scale them "
                         "differently: convert them or choose another normalize mode")
    a = np.concatenate(arrays)
    meta = {"source": str(path), "format": sorted(set(kinds.values())), "files": [p.name for p in files],
            "items_per_file": [int(x.shape[0]) for x in arrays], **_stats(a),
            "original_dtype": dtypes[0], "per_file": metas}
    return _finish(a, meta, np.dtype(dtypes[0]), normalize, percentile, as_gray)
