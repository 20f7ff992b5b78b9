"""A user's own measurements, read as they are: one ``Measurement`` per 2-D slice, in the file's units.

``read_source(path)`` is the one entry point for files a user points selfinv at
(``selfinv fit --data.path``, ``selfinv predict --input``, ``selfinv finetune
--measurement``, ``selfinv simulate --data.path``). ``path`` is a file or a folder:

* PNG / JPEG / BMP / TIFF (single images or multi-page stacks, any integer or float
  dtype): one measurement per page;
* NPY / NPZ (``(H, W)``, ``(N, H, W)``, ``(N, C, H, W)``): one per ``N``;
* MRC (cryo-EM micrograph or stack): one per section;
* DICOM, a file or a folder holding one series: one per slice, sorted by position,
  rescale slope/intercept applied (CT comes in Hounsfield units);
* FITS (astronomy): the first image HDU, one per plane of a cube;
* fastMRI HDF5 (``kspace`` ``(slices, H, W)`` complex, optional ``mask`` ``(W,)``): one
  per slice, k-space as 2 real channels, with the file's own ``mask`` — or, without
  one, the columns that hold data — as the operator parameter;
* a ``selfinv simulate`` file (``.npz``/``.h5`` with ``y``): one per item, with its
  operator parameters and clean image.

A folder is read file by file in natural name order (``img2`` before ``img10``);
files may have different sizes. Stacks and volumes are **sets of 2-D slices**:
each slice is a measurement (there is no 3-D operator). Values are never
rescaled here (no division by the dtype maximum): normalisation is the training
run's business (``selfinv.data.normalization``), stored in its checkpoint and
undone on output. Each measurement remembers its file, its slice index and the
file's dtype, so outputs can be written one per input, named after it, in the
input's units.

Example::

    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> np.save(os.path.join(folder, "a.npy"), np.zeros((2, 16, 16), np.uint16))
    >>> [(m.name, tuple(m.y.shape), m.dtype) for m in read_source(folder)]
    [('a_0000', (1, 16, 16), 'uint16'), ('a_0001', (1, 16, 16), 'uint16')]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from selfinv.data.readers import list_folder, read_dicom_series, read_raw


@dataclass
class Measurement:
    """One 2-D measurement ``y`` ``(C, H, W)`` (float32, the file's units) and where it came from."""

    y: Tensor
    #: output stem: the file name, with the slice index for multi-slice files
    name: str
    #: the file (or DICOM folder) it was read from
    source: str
    #: slice index in that file, and how many slices the file holds
    index: int = 0
    count: int = 1
    #: per-measurement operator parameters without a batch dimension (e.g. the MRI ``mask``)
    params: dict[str, Tensor] = field(default_factory=dict)
    #: the clean image, when the file holds one (``selfinv simulate`` output); evaluation only
    x: Tensor | None = None
    #: a second, independent noisy measurement of the same image (Noise2Noise pairs), when the file holds one
    y2: Tensor | None = None
    #: dtype of the stored values (outputs are cast back to it)
    dtype: str = "float32"
    #: ``"image"``, ``"kspace"`` (complex: 2 channels, or 2 per coil) or ``"simulated"``
    kind: str = "image"
    #: the file's pixel size, when it states one (MRC voxel size, TIFF resolution / ImageJ calibration, DICOM
    #: PixelSpacing): ``{"x", "y", "z", "unit", "imagej"}``; outputs keep it (``writers.write_stack``)
    pixel_size: dict | None = None
    #: ``(file, frame)`` this slice was read from when the source is DICOM: ``selfinv predict`` writes its
    #: reconstruction as a DICOM file with that file's header (``writers.write_dicom``)
    origin: tuple[str, int] | None = None


def _is_selfinv_file(path: Path) -> bool:
    """A ``selfinv simulate`` file: an ``.npz``/``.h5`` with a ``y`` entry (and ``metadata``)."""
    try:
        return _has_y(path)
    except ImportError:
        return False
    except Exception as e:  # noqa: BLE001 - zipfile/h5py raise many types for damaged files
        raise ValueError(f"{path}: cannot read this file, is it damaged or truncated? ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None


def _has_y(path: Path) -> bool:
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return "y" in z.files or any(k.startswith("y@") for k in z.files)
    if path.suffix.lower() in (".h5", ".hdf5"):
        try:
            import h5py
        except ImportError:
            return False
        with h5py.File(path, "r") as f:
            return "y" in f or any(k.startswith("y@") for k in f)
    return False


def _from_selfinv_file(path: Path) -> list[Measurement]:
    from selfinv.data.measurements import MeasurementDataset

    ds = MeasurementDataset.load(path)
    out = []
    for i in range(len(ds)):
        item = ds[i]
        out.append(Measurement(y=item["y"].float(), name=f"{path.stem}_{i:04d}", source=str(path), index=i,
                               count=len(ds), params=dict(item["params"]), x=item.get("x"), y2=item.get("y2"),
                               dtype=str(item["y"].numpy().dtype), kind="simulated"))
    return out


def _kspace_mask(meta: dict, kspace: np.ndarray) -> np.ndarray:
    """The file's ``mask`` ``(W,)``, else the k-space columns holding any non-zero sample."""
    if "mask" in meta:
        return np.asarray(meta["mask"], dtype=np.float32)
    return (np.abs(kspace).reshape(-1, kspace.shape[-1]).max(axis=0) > 0).astype(np.float32)


def _split(array: np.ndarray, meta: dict, path: Path, stem: str) -> list[Measurement]:
    n = array.shape[0]
    dtype = str(np.dtype(meta.get("original_dtype", array.dtype)))
    is_kspace = meta.get("key") == "kspace"
    params: dict[str, Tensor] = {}
    coils = int(meta.get("coils", 0))
    if is_kspace:
        k = array[:, 0::2] + 1j * array[:, 1::2]  # (slices, coils, H, W)
        params = {"mask": torch.from_numpy(_kspace_mask(meta, k)).reshape(1, 1, -1)}
    pixel_size = meta.get("pixel_size")
    origins = meta.get("slice_origins")
    out = []
    for i in range(n):
        y = torch.from_numpy(np.ascontiguousarray(array[i], dtype=np.float32))
        name = stem if n == 1 else f"{stem}_{i:04d}"
        own = dict(params)
        if coils:  # multi-coil k-space read coil by coil: its self-calibrated sensitivities
            own["sensitivities"] = _sensitivities(k[i], own["mask"], path, name)
        out.append(Measurement(y=y, name=name, source=str(path), index=i, count=n, params=own,
                               dtype=dtype, kind="kspace" if is_kspace else "image", pixel_size=pixel_size,
                               origin=tuple(origins[i]) if origins else None))
    return out


def _sensitivities(kspace: np.ndarray, mask: Tensor, path: Path, name: str) -> Tensor:
    """The coil sensitivities ``(C, 2, H, W)`` of one slice of multi-coil k-space, from its calibration lines."""
    from selfinv.physics.mri_multicoil import estimate_sensitivities

    try:
        return estimate_sensitivities(torch.from_numpy(np.ascontiguousarray(kspace, np.complex64)), mask).float()
    except ValueError as e:
        raise ValueError(f"{path} ({name}): {e}") from None


def read_file(path: str | Path, key: str | None = None) -> list[Measurement]:
    """The measurements of one file (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if p.is_dir():
        return read_source(p, key)
    if _is_selfinv_file(p):
        return _from_selfinv_file(p)
    array, meta = read_raw(p, key=key)
    if array.size == 0 or array.shape[0] == 0:
        raise ValueError(f"{p} holds no image (array shape {tuple(array.shape)})")
    return _split(array, meta, p, p.stem)


def read_source(path: str | Path, key: str | None = None) -> list[Measurement]:
    """All measurements of a file or a folder (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if p.is_file():
        return read_file(p, key)
    if not p.is_dir():
        raise ValueError(f"{p} is neither a file nor a folder (a device, pipe or socket): expected an image file "
                         f"or a folder of them")
    files = list_folder(p)
    kinds = {k for _, k in files}
    if kinds == {"dicom"}:  # one series: slices sorted by position, not by file name
        array, meta = read_dicom_series([f for f, _ in files])
        return _split(array, meta, p, p.name)
    if "dicom" in kinds:
        raise ValueError(f"folder {p} mixes DICOM files with {sorted(kinds - {'dicom'})} files; put a DICOM "
                         f"series in a folder of its own")
    out: list[Measurement] = []
    for f, _ in files:
        out.extend(read_file(f, key))
    return out


def with_pairs(measurements: list[Measurement], seconds: list[Measurement], option: str = "data.pairs",
               main: str = "data.path") -> list[Measurement]:
    """``measurements`` with ``y2`` = the matching measurement of ``seconds`` (the second noisy measurements given
    by ``option``, in the same order: sorted file names, then slices), checked to match one to one in shape and
    blank (NaN) pixels, and not to be copies (a pair is two independent measurements of one image)."""
    if len(seconds) != len(measurements):
        raise ValueError(f"{option} holds {len(seconds)} measurement(s) but {main} {len(measurements)}; they "
                         f"must correspond one to one (the second noisy measurement of each image)")
    out = []
    for m, s in zip(measurements, seconds, strict=True):
        if s.y.shape != m.y.shape:
            raise ValueError(f"{option}: {s.name} ({s.source}) has shape {tuple(s.y.shape)} but its pair {m.name} "
                             f"({m.source}) {tuple(m.y.shape)}; a pair is two measurements of the same image")
        if m.y.is_floating_point() and not torch.equal(torch.isnan(m.y), torch.isnan(s.y.float())):
            raise ValueError(f"{option}: {s.name} ({s.source}) has blank (NaN) pixels where {m.name} has none, or "
                             f"the reverse; the two measurements of a pair must be blank at the same pixels")
        if torch.equal(m.y, s.y.to(m.y.dtype)):
            raise ValueError(f"{option}: {s.name} ({s.source}) is identical to {m.name} ({m.source}); a pair is two "
                             f"independent noisy measurements of the same image (Noise2Noise on identical copies "
                             f"learns the identity)")
        out.append(replace(m, y2=s.y.to(m.y.dtype)))
    return out


def kspace_physics() -> list[str]:
    """The registered physics that take k-space measurements (complex images, ``Physics.complex_image``)."""
    from selfinv import registry

    return [n for n in registry.names("physics") if registry.resolve("physics", n).complex_image]


def kspace_problem(m: Measurement, physics: type, name: str) -> str | None:
    """Why measurement ``m`` is no k-space for the MRI physics class ``physics`` (registered as ``name``), or None:
    an image (not complex, not 2 real channels: a grayscale or colour picture), or, for a physics that
    ``keeps_coils``, an array without the coil sensitivities that a fastMRI multi-coil file gives."""
    if m.kind != "image":
        return None
    channels, real = int(m.y.shape[0]), not m.dtype.startswith("complex")
    if real and (channels % 2 or channels != 2 and not physics.keeps_coils):
        return (f"{m.name} ({m.source}) is an image ({channels} channel(s)), but physics '{name}' trains on MRI "
                f"k-space (a fastMRI HDF5 file's 'kspace', or complex / 2-channel arrays); use an image-domain "
                f"physics (denoising, blur, downsampling) for images")
    if physics.keeps_coils:
        return (f"{m.name} ({m.source}) holds no coil sensitivities: physics '{name}' reads multi-coil k-space from "
                f"fastMRI HDF5 files ('kspace' (slices, coils, H, W), its central lines sampled), whose coil "
                f"sensitivities it estimates; use physics 'mri' for single-coil k-space arrays")
    return None


def check_kspace(measurements: list[Measurement], physics: str, where: str) -> None:
    """Refuse MRI k-space (a fastMRI ``kspace`` dataset) given to a physics whose images are not complex
    (``Physics.complex_image``): read as an image it would train a denoiser on k-space stripes; and images
    given to an MRI physics (which would read them as k-space).

    Example::

        >>> import torch
        >>> m = Measurement(y=torch.zeros(2, 4, 4), name="slice0", source="scan.h5", kind="kspace")
        >>> try:
        ...     check_kspace([m], "denoising", "data.path")
        ... except ValueError as e:
        ...     print(str(e)[:48])
        data.path: scan.h5 holds MRI k-space (its 'kspac
        >>> check_kspace([m], "mri", "data.path")  # nothing to say
    """
    from selfinv import registry

    cls = registry.resolve("physics", physics, "physics")
    if cls.complex_image:
        for m in measurements:
            problem = kspace_problem(m, cls, physics)
            if problem:
                raise ValueError(f"{where}: {problem}")
        return
    k_space = kspace_physics()
    for m in measurements:
        if m.kind == "kspace":
            raise ValueError(f"{where}: {m.source} holds MRI k-space (its 'kspace' dataset), not '{physics}' "
                             f"measurements; train on it with physics: {{name: {k_space[0]}}} (the file's mask is "
                             f"used{''.join(f'; {n} also takes it' for n in k_space[1:])})")


def blank_pixels_allowed(m: Measurement, image_domain: bool) -> bool:
    """Whether NaN in ``m`` marks blank pixels — no data, e.g. a FITS image's undefined values, a stitched
    mosaic's or a registered stack's edges in a float TIFF, NPY or MRC file: a real floating-point image under
    an image-domain operator (denoising, blur, downsampling), which training cuts into patches that avoid
    them. Elsewhere (k-space, sinograms, integer data, ``selfinv simulate`` files, used whole) a NaN is no
    convention and stays an error of the finiteness checks; infinities always are."""
    return image_domain and m.kind == "image" and m.y.is_floating_point()


def fill_blank_pixels(y: Tensor, m: Measurement, image_domain: bool) -> tuple[Tensor, Tensor | None]:
    """Blank (NaN) pixels of an image (``blank_pixels_allowed``) filled with the median of the other pixels,
    and their mask: ``(filled y, mask)``. ``(y, None)`` when there are none, when every pixel is blank, and
    where NaN marks no blank pixel.

    Example::

        >>> m = Measurement(y=torch.tensor([[[1.0, float("nan")], [3.0, 5.0]]]), name="a", source="a.tif")
        >>> filled, blank = fill_blank_pixels(m.y, m, image_domain=True)
        >>> filled.tolist(), blank.tolist()
        ([[[1.0, 3.0], [3.0, 5.0]]], [[[False, True], [False, False]]])
    """
    if not blank_pixels_allowed(m, image_domain) or not y.is_floating_point():
        return y, None
    blank = torch.isnan(y)
    if not bool(blank.any()) or bool(blank.all()):
        return y, None
    return y.masked_fill(blank, float(y[~blank].median())), blank


def check_channels(measurements: list[Measurement], channels: int | None, where: str,
                   expected: str = "the model takes {n}", fix: str = "",
                   image_channels: Callable[[int], int] = int) -> int:
    """Every measurement is of an image with ``channels`` channels (``None``: as many as the first); returns that
    count. ``image_channels``: the image channels of a measurement with that many channels (the physics' own,
    ``Physics.image_channels``; by default the same).

    A clear error names the first measurement that differs, ``expected`` what asked for ``channels``
    (``{n}`` is the count) and ``fix`` how to change that.
    """
    if not measurements:
        return 1 if channels is None else channels
    first = measurements[0]
    want = image_channels(first.y.shape[0]) if channels is None else channels
    for m in measurements:
        got = image_channels(m.y.shape[0])
        if got == want:
            continue
        if channels is None:
            raise ValueError(f"{where}: {m.name} ({m.source}) has {got} channel(s) but {first.name} "
                             f"({first.source}) has {want}: one run trains one network on images with the "
                             f"same number of channels (convert colour images to grayscale, or train them apart)")
        hint = f" ({fix})" if fix else ""
        if got in (3, 4):
            hint += ("; a TIFF stack of 3 or 4 slices stored as colour planes reads as slices once saved with "
                     "photometric='minisblack'")
        raise ValueError(f"{where}: {m.name} ({m.source}) has {got} channel(s) but {expected.format(n=want)}{hint}")
    return want
