"""Write reconstructions and measurements to image files.

``write_stack(path, array)`` writes reconstructions in the user's units and dtype
(what ``selfinv predict`` uses): ``.tif`` (stacks as multi-page TIFF), ``.npy``,
``.mrc`` (cryo-EM; mode chosen from the dtype) and ``.png`` (one 8- or 16-bit image).

``write_dicom(path, frames, template, series_uid)`` writes a reconstruction of a DICOM
input as a DICOM file with that input's header (a new instance of a derived series).

``write_image(path, array)`` chooses the format from the extension:

* ``.tif``/``.tiff`` (tifffile): values written as float32 unchanged, grayscale
  pages (``photometric="minisblack"``) with the axes recorded: ``(H, W)`` ->
  ``YX``, ``(C, H, W)`` -> ``CYX`` (one image of ``C`` channels), ``(N, C, H, W)``
  -> ``TCYX`` (a stack); ``read_image`` gives back ``(1, 1, H, W)``,
  ``(1, C, H, W)`` and ``(N, C, H, W)``.
* ``.npy`` (numpy): the array as given (converted to numpy, dtype kept).
* ``.png``: 8-bit (default) or 16-bit (``bit_depth=16``). Scaling:
  ``v = clip((x - lo) / (hi - lo), 0, 1)``, stored as ``round(v * (2**bit_depth - 1))``
  with ``(lo, hi) = value_range`` (default ``(0, 1)``); read back with
  ``selfinv.data.read_image(..., normalize="dtype")`` to get ``v`` again (to
  within ``0.5 / (2**bit_depth - 1)``). One grayscale ``(H, W)`` or RGB
  ``(3, H, W)`` image per file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from selfinv.data.readers import TIFF_RESOLUTION_UNITS, dcmread, dicom_frame_count, dicom_frame_value, dicom_rescale

WRITE_EXTENSIONS = (".tif", ".tiff", ".png", ".npy")
#: formats ``write_stack`` writes, and the extension of each
STACK_FORMATS = {"tiff": ".tif", "png": ".png", "npy": ".npy", "mrc": ".mrc", "fits": ".fits"}
#: the file extensions of each format (``write_stack`` accepts all of them; an input's own is kept)
FORMAT_EXTENSIONS = {"tiff": (".tif", ".tiff"), "png": (".png",), "npy": (".npy",), "mrc": (".mrc", ".mrcs", ".map"),
                     "fits": (".fits", ".fit", ".fts")}
#: every extension ``write_stack`` writes
STACK_EXTENSIONS = tuple(ext for exts in FORMAT_EXTENSIONS.values() for ext in exts)


def png_unfit(dtype: np.dtype | str, shape: tuple[int, ...]) -> str | None:
    """Why PNG cannot hold an ``(N, C, H, W)`` array of ``dtype`` (``"a stack of 3 images"``, ``"float32 data"``),
    or None when it can: one 8- or 16-bit grayscale image, or one 8-bit RGB image."""
    dt, (n, c) = np.dtype(dtype), shape[:2]
    if n > 1:
        return f"a stack of {n} images"
    if dt not in (np.uint8, np.uint16):
        return f"{dt} data (it holds 8- and 16-bit unsigned integers)"
    if c not in (1, 3):
        return f"{c}-channel images (it holds grayscale or RGB)"
    if c == 3 and dt == np.uint16:
        return "16-bit RGB (selfinv writes 8-bit RGB PNG)"
    return None


def _to_numpy(array: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, Tensor):
        array = array.detach().cpu()
        if array.dtype in (torch.bfloat16, torch.float16):
            array = array.float()
        return array.numpy()
    return np.asarray(array)


def _png_layout(a: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` from ``(H, W)``, ``(1|3, H, W)`` or ``(1, 1|3, H, W)``."""
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    elif a.ndim == 3 and a.shape[0] == 3:
        a = a.transpose(1, 2, 0)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3):
        return a
    raise ValueError(f"PNG holds one grayscale (H, W) or RGB (3, H, W) image, got shape {a.shape}; "
                     "write stacks to .tif")


def write_image(path: str | Path, array: Tensor | np.ndarray, *, bit_depth: int = 8,
                value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    """Write ``array`` to ``path`` (``.tif``, ``.tiff``, ``.png`` or ``.npy``); see the module doc.

    Returns the path written.
    """
    path = Path(path)
    a = _to_numpy(array)
    ext = path.suffix.lower()
    if ext in (".tif", ".tiff"):
        import tifffile
        if np.iscomplexobj(a):
            raise TypeError("TIFF output of complex data is not supported; write real/imaginary channels")
        if a.ndim not in (2, 3, 4):
            raise ValueError(f"TIFF output expects (H, W), (C, H, W) or (N, C, H, W), got shape {a.shape}")
        axes = {2: "YX", 3: "CYX", 4: "TCYX"}[a.ndim]
        tifffile.imwrite(path, a.astype(np.float32, copy=False), photometric="minisblack",
                         metadata={"axes": axes})
    elif ext == ".npy":
        np.save(path, a, allow_pickle=False)
    elif ext == ".png":
        from PIL import Image
        if bit_depth not in (8, 16):
            raise ValueError(f"PNG bit_depth must be 8 or 16, got {bit_depth}")
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"value_range must have hi > lo, got {value_range}")
        a = _png_layout(a).astype(np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError("cannot write NaN or infinite values to PNG")
        top = 2**bit_depth - 1
        q = np.rint(np.clip((a - lo) / (hi - lo), 0.0, 1.0) * top)
        if bit_depth == 16 and q.ndim == 3:
            raise ValueError("16-bit PNG is supported for grayscale images only; write RGB as 8-bit or .tif")
        Image.fromarray(q.astype(np.uint8 if bit_depth == 8 else np.uint16)).save(path)
    else:
        raise ValueError(f"cannot write '{path.name}': supported extensions are {' '.join(WRITE_EXTENSIONS)}")
    return path


#: lengths in ångström of the units a pixel size may come in (MRC headers are in ångström)
_ANGSTROM = {"angstrom": 1.0, "Å": 1.0, "nm": 10.0, "nanometer": 10.0, "um": 1e4, "µm": 1e4, "micron": 1e4,
             "\\u00B5m": 1e4, "mm": 1e7, "cm": 1e8, "inch": 2.54e8}


def pixel_size_for(pixel_size: dict | None, measured_hw: tuple[int, int], output_hw: tuple[int, int]) -> dict | None:
    """The pixel size of an output of ``output_hw`` pixels reconstructed from a measurement of ``measured_hw``
    over the same field of view (denoising, deblurring: the same; super-resolution ×2: half)."""
    if not pixel_size or not pixel_size.get("x") or not pixel_size.get("y"):
        return None
    (h, w), (h2, w2) = measured_hw, output_hw
    return {**pixel_size, "x": pixel_size["x"] * w / w2, "y": pixel_size["y"] * h / h2}


def _squeezed(a: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` without its unit leading axes: ``(H, W)`` for one single-channel image, ``(N, H, W)``
    for a single-channel stack, ``(C, H, W)`` for one multi-channel image."""
    N, C = a.shape[:2]
    return a[0, 0] if N == 1 and C == 1 else a[:, 0] if C == 1 else a[0] if N == 1 else a


def write_stack(path: str | Path, array: np.ndarray, pixel_size: dict | None = None,
                header_from: str | Path | None = None, history: str = "selfinv") -> Path:
    """Write ``array`` ``(N, C, H, W)`` of any real dtype, values unchanged, to ``path`` (``.tif``, ``.npy``,
    ``.mrc`` / ``.mrcs`` / ``.map``, ``.png``, ``.fits``). Single images drop the leading axes (``(H, W)`` when
    ``N = C = 1``); stacks keep them. TIFF stores floating-point values as float32 (ImageJ and most viewers read
    no 64- or 16-bit floats). PNG holds one 8/16-bit grayscale or 8-bit RGB image: other dtypes or stacks are
    refused (``png_unfit``; use ``.tif``). ``pixel_size`` (``{"x", "y", "z", "unit", "imagej"}``, as the
    readers give it): written to an MRC header (in ångström; an unknown or zero Z spacing is the X one: the
    voxel size viewers expect rather than 0) or as a TIFF's resolution (an ImageJ calibration for ImageJ
    inputs).
    FITS: with ``header_from`` (the FITS file it reconstructs) the output keeps that file's structure — the
    image HDU selfinv reads holds the output under its header (WCS, units, observation keywords) rescaled to
    the output's size (``CRPIX``, ``CDELT``, ``CD``: the same sky, smaller pixels for super-resolution), the
    primary header and the other HDUs are copied (image planes only while they still align, ``_write_fits``);
    ``history`` is added as a ``HISTORY`` card."""
    path = Path(path)
    a = np.asarray(array)
    if a.ndim != 4:
        raise ValueError(f"write_stack expects (N, C, H, W), got shape {a.shape}")
    N, C = a.shape[:2]
    squeezed = _squeezed(a)
    ext = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext in (".tif", ".tiff"):
        import tifffile

        if np.issubdtype(squeezed.dtype, np.floating) and squeezed.dtype != np.float32:
            squeezed = squeezed.astype(np.float32)
        axes = {2: "YX", 3: "QYX" if C == 1 else "CYX", 4: "QCYX"}[squeezed.ndim]
        px = pixel_size or {}
        resolution = (1 / px["x"], 1 / px["y"]) if px.get("x") and px.get("y") else None
        if resolution and px.get("imagej") and squeezed.dtype in (np.uint8, np.uint16, np.float32):
            # an ImageJ hyperstack: slices (every non-channel axis of the input, merged) as Z, channels as C
            meta: dict = {"axes": {2: "YX", 3: "ZYX" if C == 1 else "CYX", 4: "ZCYX"}[squeezed.ndim]}
            if px.get("unit"):
                meta["unit"] = px["unit"]
            if px.get("z"):
                meta["spacing"] = px["z"]
            tifffile.imwrite(path, squeezed, imagej=True, resolution=resolution, metadata=meta)
        else:
            extra: dict = {}
            if resolution and px.get("unit") is None:  # pixels per unstated unit (ResolutionUnit NONE)
                extra = {"resolution": resolution, "resolutionunit": 1}
            elif resolution and str(px.get("unit")) in _ANGSTROM:
                # TIFF knows inches and centimetres: other lengths (an MRC's ångström) become pixels per cm
                unit = px["unit"] if px["unit"] in ("inch", "cm") else "cm"
                per = _ANGSTROM[unit] / _ANGSTROM[str(px["unit"])]
                codes = {u: c for c, u in TIFF_RESOLUTION_UNITS.items()}
                extra = {"resolution": (resolution[0] * per, resolution[1] * per), "resolutionunit": codes[unit]}
            tifffile.imwrite(path, squeezed, photometric="minisblack", metadata={"axes": axes}, **extra)
    elif ext == ".npy":
        np.save(path, squeezed, allow_pickle=False)
    elif ext in FORMAT_EXTENSIONS["mrc"]:
        import mrcfile

        if C != 1:
            raise ValueError(f"MRC holds single-channel images or stacks, got {C} channels; write .tif")
        mode_dtypes = (np.int8, np.int16, np.uint16, np.float32)
        data = squeezed if squeezed.dtype in mode_dtypes else squeezed.astype(
            np.int16 if np.issubdtype(squeezed.dtype, np.integer) and squeezed.min() >= -32768
            and squeezed.max() <= 32767 else np.float32)
        with mrcfile.new(path, overwrite=True) as m:
            m.set_data(np.ascontiguousarray(data))
            px = pixel_size or {}
            to_angstrom = _ANGSTROM.get(str(px.get("unit")), None)
            if px.get("x") and px.get("y") and to_angstrom is not None:
                z = px.get("z") or px["x"]  # no Z spacing known (a 2-D image, a TIFF stack): isotropic voxels
                m.voxel_size = (px["x"] * to_angstrom, px["y"] * to_angstrom, z * to_angstrom)
    elif ext in FORMAT_EXTENSIONS["fits"]:
        _write_fits(path, squeezed, header_from, history)
    elif ext == ".png":
        from PIL import Image

        why = png_unfit(a.dtype, a.shape)
        if why is not None:
            raise ValueError(f"{path.name}: PNG cannot hold {why}; this reconstruction is {a.dtype} of shape "
                             f"{a.shape}: use --format tiff")
        rgb = squeezed.ndim == 3  # (3, H, W) -> (H, W, 3)
        Image.fromarray(np.ascontiguousarray(squeezed.transpose(1, 2, 0)) if rgb else squeezed).save(path)
    else:
        raise ValueError(f"cannot write '{path.name}': the extension '{ext or '(none)'}' is none of selfinv's "
                         f"output formats ({' '.join(STACK_EXTENSIONS)})")
    return path


#: container formats whose output keeps the input file's other arrays (``write_container``)
CONTAINER_EXTENSIONS = (".h5", ".hdf5", ".npz")


def write_container(path: str | Path, array: np.ndarray, source: str | Path, key: str | None,
                    history: str = "selfinv") -> Path:
    """Write ``array`` ``(N, C, H, W)`` (a reconstruction of one array of the HDF5 / NPZ file ``source``) as a file
    like ``source``: its other arrays (and, for HDF5, groups and attributes) copied, the reconstruction under the
    array's own name — the one ``key`` names, else the file's only array — with that dataset's attributes, or
    under ``reconstruction_selfinv`` for fastMRI k-space (fastMRI's naming; ``kspace`` itself is not copied).
    The input's layout is kept when the sizes match (``(slices, H, W)`` stays so), else single images and
    channels are squeezed as in ``write_stack``. HDF5 gets a ``selfinv_history`` attribute.

    Example::

        >>> import tempfile, numpy as np
        >>> d = Path(tempfile.mkdtemp())
        >>> np.savez(d / "in.npz", images=np.zeros((3, 8, 8), np.float32), exposure=np.arange(3.0))
        >>> out = write_container(d / "out.npz", np.ones((3, 1, 8, 8), np.float32), d / "in.npz", None)
        Traceback (most recent call last):
        ...
        ValueError: in.npz holds several arrays ['images', 'exposure']: name the one reconstructed
        >>> out = write_container(d / "out.npz", np.ones((3, 1, 8, 8), np.float32), d / "in.npz", "images")
        >>> z = np.load(out); sorted(z.files), z["images"].shape, z["exposure"].tolist()
        (['exposure', 'images'], (3, 8, 8), [0.0, 1.0, 2.0])
    """
    path, source = Path(path), Path(source)
    a = np.asarray(array)
    squeezed = _squeezed(a)
    path.parent.mkdir(parents=True, exist_ok=True)

    def laid_out(shape: tuple[int, ...]) -> np.ndarray:
        return a.reshape(shape) if int(np.prod(shape)) == a.size else squeezed

    if source.suffix.lower() == ".npz":
        with np.load(source, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        key = _only_array(key, list(arrays), source)
        arrays[key] = laid_out(arrays[key].shape)
        np.savez(path, **arrays)
        return path
    import h5py

    with h5py.File(source, "r") as src, h5py.File(path, "w") as dst:
        names: list[str] = []
        src.visititems(lambda k, o: names.append(k) if isinstance(o, h5py.Dataset) else None)
        key = "kspace" if key is None and "kspace" in src else _only_array(key, names, source)
        out_key = "reconstruction_selfinv" if key == "kspace" else key
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src:
            if name != key.split("/")[0]:
                src.copy(src[name], dst, name=name)
            elif "/" in key:  # the group holding the array: copied without it
                src.copy(src[name], dst, name=name)
                del dst[key]
        data = squeezed if key == "kspace" else laid_out(src[key].shape)
        dset = dst.create_dataset(out_key, data=data)
        if key != "kspace":
            for k, v in src[key].attrs.items():
                dset.attrs[k] = v
        dst.attrs["selfinv_history"] = history
    return path


def _only_array(key: str | None, names: list[str], source: Path) -> str:
    if key is not None:
        return key
    if len(names) != 1:
        raise ValueError(f"{source.name} holds several arrays {names}: name the one reconstructed")
    return names[0]


#: numpy dtype of DICOM pixel data by (Bits Allocated, Pixel Representation)
_DICOM_DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16,
                 (32, 0): np.uint32, (32, 1): np.int32}
#: reconstructions outside the template's stored range are clipped; warn above this fraction of the pixels
DICOM_CLIP_WARN = 0.01


def write_dicom(path: str | Path, frames: np.ndarray, template: str | Path, series_uid: str,
                pixel_size: dict | None = None, description: str = "selfinv") -> Path:
    """Write ``frames`` — ``(F, H, W)`` grayscale in the template's rescaled units (Hounsfield units for CT), or
    ``(F, 3, H, W)`` RGB for a colour template — as a DICOM file with the header of ``template``, the file they
    were reconstructed from.

    Grayscale: the stored values are ``round((v - RescaleIntercept) / RescaleSlope)`` in the template's pixel
    type and *Bits Stored* range. Colour (RGB, YBR or PALETTE COLOR templates, read as RGB by
    ``selfinv.data.readers``): the RGB values rounded into the template's sample range (a palette's: its colour
    table's 8 or 16 bits), written as uncompressed *RGB* pixels (a palette image becomes an RGB one: its colour
    table no longer applies). Values outside the range are clipped, with a warning above 1 % of the pixels where
    the input was not already at that limit, so a viewer shows the reconstruction in the input's units and
    window; an enhanced (multi-frame) template's rescale, pixel spacing and positions are read and written per
    frame in its functional groups. Patient, study, geometry (position, orientation) and
    window are kept; the file is a new instance (new SOP Instance UID) of the derived series ``series_uid``
    (*Image Type* ``DERIVED\\SECONDARY``, *Series Description* and *Derivation Description* say it was made by
    selfinv), written uncompressed (Explicit VR Little Endian). ``pixel_size`` (mm, ``writers.pixel_size_for``)
    replaces *Pixel Spacing* when the output size differs from the input's (same field of view: the first
    pixel's centre, *Image Position*, moves by half the change of spacing).

    Example::

        >>> import numpy as np, pydicom.data, pydicom, tempfile, pathlib
        >>> src = pydicom.data.get_testdata_file("CT_small.dcm")
        >>> hu = pydicom.dcmread(src).pixel_array[None] - 1024.0   # RescaleIntercept -1024
        >>> out = write_dicom(pathlib.Path(tempfile.mkdtemp()) / "ct.dcm", hu, src, pydicom.uid.generate_uid())
        >>> float(abs(pydicom.dcmread(out).pixel_array - 1024.0 - hu[0]).max())
        0.0
    """
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    path, frames = Path(path), np.asarray(frames)
    if frames.ndim == 4 and frames.shape[1] == 1:
        frames = frames[:, 0]
    ds = dcmread(template)
    colour = dicom_channels(ds) == 3
    if colour != (frames.ndim == 4) or frames.ndim not in (3, 4) or (colour and frames.shape[1] != 3):
        want = "RGB frames (F, 3, H, W)" if colour else "grayscale frames (F, H, W)"
        raise ValueError(f"{Path(template).name} is a {'colour' if colour else 'grayscale'} DICOM image: "
                         f"write_dicom expects {want}, got shape {frames.shape}")
    stored, bits = (_colour_stored if colour else _gray_stored)(ds, frames, Path(template), path)
    if not ds.original_encoding[1]:
        _to_little_endian(ds, path.name)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # new pixel data, uncompressed, little endian
    for tag in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue"):
        if tag in ds:
            del ds[tag]
    source_sop = (str(getattr(ds, "SOPClassUID", "")), str(getattr(ds, "SOPInstanceUID", "")))
    if colour:
        for element in [e for e in ds if "PaletteColorLookupTable" in e.keyword]:  # a palette's colour table
            del ds[element.tag]
        ds.set_pixel_data(stored if stored.shape[0] > 1 else stored[0], "RGB", bits)
    else:
        _set_pixels(ds, stored, bits)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    image_type = list(getattr(ds, "ImageType", []) or [])
    ds.ImageType = ["DERIVED", "SECONDARY", *image_type[2:]]
    for item in ds.iterall():  # an enhanced object's per-frame Frame Type says the same
        if item.keyword == "FrameType" and item.VM >= 2:
            item.value = ["DERIVED", "SECONDARY", *list(item.value)[2:]]
    ds.SeriesDescription = (f"{getattr(ds, 'SeriesDescription', '') or ''} {description}").strip()[-64:]
    ds.DerivationDescription = f"reconstructed by {description} from SOP instance {source_sop[1]}"
    if all(source_sop):
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source_sop
        ds.SourceImageSequence = [ref]
    if pixel_size and pixel_size.get("x") and pixel_size.get("y"):
        _set_pixel_spacing(ds, [float(pixel_size["y"]), float(pixel_size["x"])])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_channels(ds) -> int:
    """The channels ``selfinv.data.readers`` reads a DICOM image as, and a reconstruction written under its
    header must have: 3 (RGB) for colour pixels — three samples per pixel, or a palette's indices — else 1."""
    photometric = str(getattr(ds, "PhotometricInterpretation", "")).upper()
    return 3 if int(getattr(ds, "SamplesPerPixel", 1) or 1) == 3 or photometric == "PALETTE COLOR" else 1


def _clip_report(stored: np.ndarray, lo: int, hi: int, source: np.ndarray | None, path: Path, units: str) -> None:
    """Warn when more than ``DICOM_CLIP_WARN`` of ``stored`` falls outside ``[lo, hi]`` where ``source`` (the
    input's stored values, when it has the same shape) was not already at that limit (air at -1024 HU, a
    saturated detector, a white background)."""
    import warnings

    outside = (stored < lo) | (stored > hi)
    if source is not None and source.shape == stored.shape:
        outside &= ~(((source <= lo) & (stored < lo)) | ((source >= hi) & (stored > hi)))
    clipped = int(outside.sum())
    if clipped > DICOM_CLIP_WARN * stored.size:
        warnings.warn(f"{path.name}: {clipped} of {stored.size} pixels ({100 * clipped / stored.size:.1f} %) fall "
                      f"outside the range the input's pixel type stores ({units}) where the input did not, and "
                      f"were clipped; --format tiff keeps them", UserWarning, stacklevel=3)


def _gray_stored(ds, frames: np.ndarray, template: Path, path: Path) -> tuple[np.ndarray, int]:
    """``(F, H, W)`` values in the units of ``template`` (read as ``ds``) -> its stored integers (inverse rescale,
    clipped), and its *Bits Stored*; ``path`` is the output (named in the clipping warning)."""
    kind = (int(getattr(ds, "BitsAllocated", 16)), int(getattr(ds, "PixelRepresentation", 0)))
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if kind not in _DICOM_DTYPES or samples != 1 or "FloatPixelData" in ds:
        raise ValueError(f"{template.name}: DICOM output keeps the input's pixel type, and selfinv writes 8/16/32-bit "
                         f"integer grayscale or 8/16-bit RGB pixels (this file: {kind[0]}-bit"
                         f"{', floating point' if 'FloatPixelData' in ds else ''}, {samples} sample(s) per pixel, "
                         f"{str(getattr(ds, 'PhotometricInterpretation', '')) or 'no photometric interpretation'})"
                         f"; use --format tiff")
    rescale = dicom_rescale(ds)  # per frame: an enhanced object may rescale each frame differently
    if len(rescale) != frames.shape[0]:
        if len(rescale) > 1:
            raise ValueError(f"{template.name} holds {len(rescale)} frames, got {frames.shape[0]} to write")
        rescale = rescale * frames.shape[0]
    slope, intercept = (np.array(v, dtype=np.float64)[:, None, None] for v in zip(*rescale, strict=True))
    bits = int(getattr(ds, "BitsStored", kind[0]) or kind[0])
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if kind[1] else (0, 2**bits - 1)
    stored = np.rint((frames.astype(np.float64) - intercept) / slope)
    same_grid = (int(ds.Rows), int(ds.Columns), dicom_frame_count(ds)) == (*stored.shape[1:], stored.shape[0])
    s0, i0 = rescale[0]
    _clip_report(stored, lo, hi, ds.pixel_array.reshape(stored.shape) if same_grid else None, path,
                 f"{lo * s0 + i0:g} to {hi * s0 + i0:g} in its units")
    return np.clip(stored, lo, hi).astype(_DICOM_DTYPES[kind]), bits


def _colour_stored(ds, frames: np.ndarray, template: Path, path: Path) -> tuple[np.ndarray, int]:
    """``(F, 3, H, W)`` RGB values -> ``(F, H, W, 3)`` unsigned integers of the sample range of ``template`` (read
    as ``ds``; a palette's: its colour table's bits), clipped; and those bits. ``path``: the output."""
    from selfinv.data.readers import _dicom_pixels, _dicom_to_nchw

    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        bits = 8 if int(ds.RedPaletteColorLookupTableDescriptor[2]) <= 8 else 16
    else:
        bits = int(getattr(ds, "BitsStored", 8) or 8)
    if bits > 16:
        raise ValueError(f"{template.name}: DICOM output keeps the input's pixel type, and selfinv writes 8/16-bit RGB "
                         f"only (this file: {bits}-bit samples); use --format tiff")
    hi = 2**bits - 1
    stored = np.rint(frames.astype(np.float64))
    same_grid = (int(ds.Rows), int(ds.Columns), dicom_frame_count(ds)) == (*stored.shape[2:], stored.shape[0])
    source = _dicom_to_nchw(np.asarray(_dicom_pixels(ds, template)), ds, template) if same_grid else None
    _clip_report(stored, 0, hi, source, path, f"0 to {hi} per colour sample")
    stored = np.clip(stored, 0, hi).astype(np.uint8 if bits <= 8 else np.uint16)
    return np.ascontiguousarray(np.moveaxis(stored, 1, -1)), bits


def _set_pixels(ds, stored: np.ndarray, bits: int) -> None:
    """New uncompressed pixel data ``(F, H, W)`` and the elements that describe it. pydicom's
    ``set_pixel_data`` takes 8/16-bit arrays; 32-bit ones (an RT dose grid) are written here the same way."""
    if stored.dtype.itemsize <= 2:
        ds.set_pixel_data(stored if stored.shape[0] > 1 else stored[0], str(ds.PhotometricInterpretation), bits)
        return
    ds.PixelData = np.ascontiguousarray(stored, dtype=stored.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW"
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, bits, bits - 1
    ds.SamplesPerPixel = 1
    if stored.shape[0] > 1 or "NumberOfFrames" in ds:
        ds.NumberOfFrames = int(stored.shape[0])


def _set_pixel_spacing(ds, spacing: list[float]) -> None:
    """New *Pixel Spacing* (between rows, between columns; mm) over the same field of view, where the object
    keeps it: at its top level (classic) or in its functional groups (enhanced: shared or per frame). A frame's
    position is the centre of its first pixel: with smaller pixels it moves by half the change of spacing along
    the row (orientation[:3]) and column (orientation[3:]) directions."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    positions = [(ds, 0)] + [((item.get("PlanePositionSequence") or [None])[0], f) for f, item in enumerate(per_frame)]
    for target, frame in positions:  # first, while the old spacing is still there to read
        old = dicom_frame_value(ds, "PixelMeasuresSequence", "PixelSpacing", frame)
        iop = dicom_frame_value(ds, "PlaneOrientationSequence", "ImageOrientationPatient", frame)
        if target is None or "ImagePositionPatient" not in target or old in (None, "") or iop in (None, ""):
            continue
        old, iop = [float(v) for v in old], np.array([float(v) for v in iop])
        shift = (old[1] - spacing[1]) / 2 * iop[:3] + (old[0] - spacing[0]) / 2 * iop[3:]
        target.ImagePositionPatient = [float(v) for v in np.array([float(v) for v in target.ImagePositionPatient])
                                       - shift]
    macros = [m for item in (*shared, *per_frame) for m in (item.get("PixelMeasuresSequence") or [])
              if "PixelSpacing" in m]
    for m in macros:
        m.PixelSpacing = spacing
    if "PixelSpacing" in ds or not macros:
        ds.PixelSpacing = spacing


def _to_little_endian(ds, name: str) -> None:
    """Re-encode a dataset read from a (retired) big-endian file as little endian: every element is decoded to
    its value; word-sized binary elements other than the pixel data (overlays, private data) cannot be
    byte-swapped without knowing their layout and are dropped, with a warning."""
    import warnings

    binary = [e.tag for e in ds.iterall() if e.VR in ("OW", "OF", "OD", "OL", "OV", "UN") and e.tag != 0x7FE00010]
    for tag in binary:
        if tag in ds:
            del ds[tag]
    if binary:
        warnings.warn(f"{name}: the input is big-endian DICOM; {len(binary)} binary element(s) besides the pixel "
                      f"data (overlays, private data) could not be converted and are left out", UserWarning,
                      stacklevel=3)
    ds.set_original_encoding(ds.original_encoding[0], True, ds.original_character_set)


#: FITS keywords that describe the stored array rather than the image: rewritten from the output's data
#: (and the tile-compression keywords of a compressed image, should a header carry them)
_FITS_STRUCTURE = re.compile(r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BSCALE|BZERO|BLANK|CHECKSUM|"
                             r"DATASUM|ZIMAGE|ZSIMPLE|ZTENSION|ZEXTEND|ZBITPIX|ZNAXIS\d*|ZTILE\d*|ZCMPTYPE|ZNAME\d*|"
                             r"ZVAL\d*|ZBLOCKED|ZPCOUNT|ZGCOUNT|ZHECKSUM|ZDATASUM|ZQUANTIZ|ZDITHER0|ZBLANK|ZSCALE|ZZERO)$")


def _write_fits(path: Path, data: np.ndarray, header_from: str | Path | None, history: str) -> None:
    """``data`` as a FITS image (see ``write_stack``). With ``header_from`` (the FITS file it reconstructs) the
    output keeps that file's structure: the image HDU selfinv read holds ``data`` under its header (WCS rescaled
    to ``data``'s size) at the same place, with the same name; the primary header (observation keywords) and
    the other HDUs (error and quality planes, tables) are copied as they are — image HDUs of the input's size
    only while ``data`` has that size too (a super-resolved image drops them: they no longer align). A
    ``HISTORY`` card says what was replaced and that the copied planes describe the input."""
    from astropy.io import fits

    from selfinv.data.readers import fits_image_hdu

    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    data = np.ascontiguousarray(data)
    if header_from is None:
        header = fits.Header()
        header.add_history(history)
        fits.PrimaryHDU(data=data, header=header).writeto(path, overwrite=True)
        return
    with fits.open(header_from, memmap=False) as hdul:
        k = fits_image_hdu(hdul, Path(header_from))
        source = hdul[k]
        header = fits.Header()
        for card in source.header.cards:
            if not _FITS_STRUCTURE.match(card.keyword) and card.keyword not in ("", "END", "XTENSION", "EXTNAME"):
                header.append(card, end=True)
        in_hw = (source.header["NAXIS2"], source.header["NAXIS1"])
        scale = (data.shape[-2] / in_hw[0], data.shape[-1] / in_hw[1])
        if scale != (1.0, 1.0):
            _rescale_wcs(header, scale)
        name = source.name if k > 0 else None
        kept, dropped = [], []
        for i, hdu in enumerate(hdul):
            if i == k:
                continue
            aligned = not (getattr(hdu, "is_image", False) and hdu.header.get("NAXIS", 0) >= 2) or scale == (1.0, 1.0)
            (kept if aligned or i == 0 else dropped).append(i)
        note = f"{history}: HDU {k}{f' ({name})' if name else ''} replaced by the reconstruction"
        if len(hdul) > 1:
            note += "; the other HDUs are the input's" + (f" (image HDUs {dropped} of the input's size dropped)"
                                                          if dropped else "")
        header.add_history(note)
        out: list = []
        for i, hdu in enumerate(hdul):
            if i == k:
                out.append(fits.PrimaryHDU(data=data, header=header) if i == 0
                           else fits.ImageHDU(data=data, header=header, name=name))
            elif i == 0:  # the primary header of an image kept in an extension: observation keywords
                primary = fits.Header([c for c in hdu.header.cards
                                       if not _FITS_STRUCTURE.match(c.keyword) and c.keyword not in ("", "END")])
                out.append(fits.PrimaryHDU(data=hdu.data if i in kept and hdu.data is not None else None,
                                           header=primary))
            elif i in kept:
                out.append(hdu.copy())
        fits.HDUList(out).writeto(path, overwrite=True)


def _rescale_wcs(header, scale: tuple[float, float]) -> None:
    """The WCS of an image resampled by ``scale = (rows, columns)`` over the same field: pixel centres move
    (``CRPIX' = (CRPIX - 0.5) s + 0.5``, FITS pixels being 1-based) and steps shrink (``CDELT / s``, ``CD / s``
    per pixel axis), for the primary and the alternate (``A``–``Z``) descriptions."""
    per_axis = {1: scale[1], 2: scale[0]}  # FITS axis 1 runs along a row (columns), axis 2 along a column
    for key in list(header.keys()):
        m = re.match(r"^(CRPIX|CDELT)([12])([A-Z]?)$", key) or re.match(r"^(CD)\d+_([12])([A-Z]?)$", key)
        if not m:
            continue
        s = per_axis[int(m.group(2))]
        value = float(header[key])
        header[key] = (value - 0.5) * s + 0.5 if m.group(1) == "CRPIX" else value / s
