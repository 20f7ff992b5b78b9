"""``selfinv predict``: reconstruct a user's measurements with a trained checkpoint, in the user's units.

For every measurement read from ``--input`` (a file or a folder, any format of
``selfinv.data.sources``):

1. the operator is **rebuilt for that measurement** from the checkpoint's config:
   its size (a 128² k-space or a 256-detector sinogram after training on 64²
   patches, ``Physics.for_measurement``), its own parameters (the file's MRI mask,
   or the mask read from which entries hold data), and ``--physics_args`` for
   what the file cannot say; a measurement no operator of that kind can take is
   an error naming both sizes;
2. the measurement is checked (finite) and mapped to the training units with the
   **normalisation stored in the checkpoint**; a warning says when its values lie
   far outside what the network was trained on;
3. the test-time estimator of the run's loss reconstructs it (seeded, so the same
   input always gives the same output), tile by tile for large image-domain inputs;
4. the reconstruction is mapped back to the **input's units and dtype** (integers
   rounded and clipped to the type's range), MRI as magnitude unless ``--complex``;
   a non-finite reconstruction is an error, never a file.

Outputs are written one per input file, named after it (``cells.tif`` ->
``OUT/cells.tif``; a stack stays a stack), in the input's format when selfinv can
write it (TIFF, PNG, NPY, MRC, FITS — with the input's header: WCS, units; HDF5 and
NPZ — the input file with the reconstruction in place of the array read, its other
arrays and attributes kept, ``writers.write_container``), else TIFF, or in
``--format``. DICOM inputs give
DICOM outputs (``OUT/<file>``, or ``OUT/<series folder>/<each file>``): each file
keeps the header of the file it was reconstructed from (patient, study, geometry,
rescale, window) as a new instance of one derived series per input series
(``writers.write_dicom``).

Example::

    selfinv predict --checkpoint runs/n2v/checkpoints/last.ckpt --input micrographs/ --output denoised/
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from torch import Tensor

#: image-domain inputs larger than this (either side) are reconstructed by tiles when --tile is not given
AUTO_TILE_ABOVE = 1024
AUTO_TILE = 512
#: 16/32-bit integer outputs spanning fewer levels (low counts) get a note: rounding (0.29 rms) is then a
#: visible part of the error
FEW_LEVELS = 256
_FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".npy": "npy", ".mrc": "mrc", ".mrcs": "mrc",
            ".map": "mrc", ".fits": "fits", ".fit": "fits", ".fts": "fits"}


def predict(checkpoint: str, input: str, output: str,
            format: Optional[Literal["tiff", "png", "npy", "mrc", "fits", "dicom"]] = None, tile: Optional[int] = None,
            overlap: int = 32, batch_size: int = 4, physics_args: Optional[dict] = None, complex: bool = False,
            key: Optional[str] = None, progress: bool = True, dtype: Literal["input", "float32"] = "input",
            pairs: Optional[str] = None, ensemble: bool = False) -> list[str]:
    """Reconstruct measurements (a file or a folder) with a trained checkpoint, in the input's units.

    Args:
        checkpoint: a ``.ckpt`` written by ``selfinv fit``.
        input: measurement file or folder (PNG/TIFF/NPY/NPZ/MRC/DICOM/FITS/fastMRI HDF5, or a ``selfinv simulate``
            file).
        output: output folder (one reconstruction per input file, named after it), or, for an input that gives
            one output file, that file's name (``denoised.tif``: a name ending in an image format's extension; the
            format follows the extension unless ``format`` is given).
        format: output format; default: the input's when writable (TIFF/PNG/NPY/MRC/FITS, HDF5/NPZ with the input
            file's other arrays, DICOM for grayscale images), else TIFF.
        tile: tile size for image-domain physics; default: tiles of 512 for images larger than 1024.
        overlap: overlap between tiles (blended).
        batch_size: tiles per network call.
        physics_args: operator arguments that override the checkpoint's, e.g. ``{n_views: 90}``.
        complex: MRI: write the complex image as 2 channels (real, imaginary) instead of the magnitude.
        key: which array of an NPZ/HDF5 input.
        progress: show a progress bar over the inputs.
        dtype: ``input``: the input's data type (integers rounded and clipped to the type's range); ``float32``:
            the reconstruction unrounded, in the input's units (for low counts, where rounding to integers
            costs precision: values spanning few levels get a note).
        pairs: a second, independent noisy measurement of each input (a file or folder matching ``input`` one to
            one, like ``data.pairs`` of fit: two exposures, even/odd frame sums): each output is the mean of the
            reconstructions of the two (their errors are partly independent). A ``selfinv simulate`` file of
            pairs is averaged the same way.
        ensemble: average the reconstructions of the 8 flips / 90° rotations of each input, mapped back (the
            geometric self-ensemble, ``selfinv.models.ensemble``): 8 network evaluations, usually a few tenths of a
            dB better; for operators that commute with them (denoising, isotropic blur, pixel-wise noise).
    """
    from selfinv import registry
    from selfinv.data.readers import FITS_EXTENSIONS, keeping_coils
    from selfinv.data.sources import check_channels, read_source, with_pairs
    from selfinv.data.writers import CONTAINER_EXTENSIONS, pixel_size_for, write_container
    from selfinv.training.loading import load_trained

    if tile is not None and tile < 8:
        raise ValueError(f"--tile must be >= 8 pixels, got {tile}")
    if not 0 <= overlap:
        raise ValueError(f"--overlap must be >= 0, got {overlap}")
    if batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {batch_size}")
    if dtype not in ("input", "float32"):
        raise ValueError(f"--dtype must be 'input' or 'float32', got {dtype!r}")
    out_dir = Path(output)
    out_file = _output_file(out_dir)
    if out_file is not None and format is None:
        format = _FORMATS.get(out_file.suffix.lower(), "dicom" if out_file.suffix.lower() == ".dcm" else None)
    if out_dir.exists() and not out_dir.is_dir() and out_file is None:
        raise ValueError(f"--output {out_dir} is a file; expected a folder for the reconstructions (or a file name "
                         f"ending in {', '.join(OUTPUT_FILE_EXTENSIONS)})")
    run = load_trained(checkpoint)
    physics = _physics(run, physics_args)
    with keeping_coils(physics.keeps_coils):
        measurements = read_source(input, key)
        if pairs is not None:
            measurements = with_pairs(measurements, read_source(pairs, key), "--pairs", "--input")
    check_physics_fits(measurements, type(run.module.physics), run.config.physics.name)
    channels = int(run.config.model.backbone.args.get("in_channels", 1))
    check_channels(measurements, channels, "--input", "the checkpoint's network takes {n}-channel images",
                   "give it images like those it was trained on, or train a network on these", physics.image_channels)
    if tile is not None and not physics.image_domain:
        raise ValueError(f"--tile: tiled prediction needs an image-domain operator (denoising, blur, "
                         f"downsampling); this checkpoint uses {type(physics).__name__}, whose measurements "
                         f"are not local")
    if tile is not None and overlap >= tile:
        raise ValueError(f"--overlap ({overlap}) must be smaller than --tile ({tile})")
    estimator = run.module.loss.estimator(run.module.model)
    if ensemble:
        if not physics.commutes_with_dihedral():
            raise ValueError(f"--ensemble averages over flips and 90° rotations of the input, which needs an operator "
                             f"and noise that commute with them (denoising, isotropic blur; pixel-wise noise); this "
                             f"checkpoint's {type(physics).__name__} with {type(physics.noise).__name__} does not")
        from selfinv.models.ensemble import dihedral_ensemble

        single = estimator

        def estimator(y, op, generator):  # noqa: F811 — the ensemble of the checkpoint's estimator
            if not op.commutes_with_dihedral():  # a measurement's own operator (e.g. its blur kernel)
                raise ValueError(f"--ensemble: this measurement's {type(op).__name__} does not commute with flips "
                                 f"and 90° rotations (an anisotropic kernel?); predict it without --ensemble")
            return dihedral_ensemble(lambda t: single(t, op, generator), y)
    by_source: dict[str, list] = {}
    for m in measurements:
        by_source.setdefault(m.source, []).append(m)
    if out_file is not None:
        if out_file.exists() and any(Path(src).resolve() == out_file.resolve() for src in by_source):
            raise ValueError(f"--output {out_file} is the input file itself: its reconstruction would replace the "
                             f"measurement; give another name")
        if len(by_source) != 1:
            raise ValueError(f"--output {out_file} names one file, but --input holds {len(by_source)} measurement "
                             f"files; give a folder for their reconstructions")
        if out_file.suffix.lower() in CONTAINER_EXTENSIONS and Path(next(iter(by_source))).suffix.lower() \
                not in CONTAINER_EXTENSIONS:
            raise ValueError(f"--output {out_file}: an {out_file.suffix} output is the input's own HDF5 / NPZ file "
                             f"with the reconstruction in place, and this input is not one; name a "
                             f"{', '.join(sorted(set(_FORMATS)))} file")
        out_file.parent.mkdir(parents=True, exist_ok=True)
        import tempfile

        out_dir = Path(tempfile.mkdtemp(prefix=".selfinv-predict-", dir=out_file.parent))
    out_dir.mkdir(parents=True, exist_ok=True)

    def write_all() -> tuple[list[str], int]:
        written: list[str] = []
        names: set[str] = set()
        bar = _progress(len(measurements), progress, "images")
        image_domain = bool(registry.resolve("physics", run.config.physics.name, "physics").image_domain)
        few_levels = -1
        for source, ms in by_source.items():
            slices = []
            for m in ms:
                slices.append(_reconstruct(m, physics, run, estimator, tile, overlap, batch_size, complex, progress,
                                           dtype))
                if np.issubdtype(slices[-1].dtype, np.integer) and slices[-1].dtype.itemsize > 1 \
                        and np.ptp(slices[-1]) < FEW_LEVELS:  # counts in a 16/32-bit type (8-bit images are 8-bit)
                    few_levels = max(few_levels, int(np.ptp(slices[-1])))
                bar.update(1)
            suffix = Path(source).suffix.lower()
            dicom = _dicom_writable(ms, slices, image_domain)
            fmt = format or ("dicom" if dicom is None else _FORMATS.get(suffix, "tiff"))
            # the input's pixel size carries over to images reconstructed over its field of view (image-domain
            # operators); a sinogram's or k-space's has no such meaning
            pixel = pixel_size_for(ms[0].pixel_size, tuple(ms[0].y.shape[-2:]), tuple(slices[0].shape[-2:])) \
                if image_domain else None
            stem = _stem(source, ms[0], names, key)
            losses = "+".join(loss.name for loss in run.config.losses)
            container = format is None and suffix in CONTAINER_EXTENSIONS and ms[0].kind in ("image", "kspace") \
                and len({sl.shape for sl in slices}) == 1
            if container:  # an HDF5 / NPZ file of the user's: the same file with the reconstruction in place
                written.append(str(write_container(out_dir / f"{stem}{suffix}", np.stack(slices), source, key,
                                                   f"selfinv predict ({losses}) of {Path(source).name}")))
            elif fmt == "dicom":
                if dicom is not None:
                    raise ValueError(f"--format dicom: {source}: {dicom}; use --format tiff")
                written.extend(_write_dicom(out_dir, stem, ms, slices, Path(source).is_dir(),
                                            pixel if _resized(ms, slices) else None, f"selfinv {losses}"))
            else:  # a FITS input's header (WCS, units) goes to a FITS output of an image over its field of view
                fits_header = suffix in FITS_EXTENSIONS and (image_domain or not _resized(ms, slices))
                written.extend(_write(out_dir, stem, fmt, slices, suffix, pixel, source if fits_header else None,
                                      f"selfinv predict ({losses}) of {Path(source).name}", Path(source).name))
        bar.close()
        return written, few_levels

    try:
        written, few_levels = write_all()
    except BaseException:
        if out_file is not None:  # nothing half-written is left beside the requested file
            import shutil

            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if out_file is not None:
        out_dir = _move_single(written, out_dir, out_file)  # out_file, or its name with the format written
        written = [str(out_dir)]
    averaged = " (each the mean of the reconstructions of its pair)" if any(m.y2 is not None for m in measurements) \
        else ""
    print(f"wrote {len(written)} reconstruction(s) of {len(measurements)} measurement(s) to {out_dir}{averaged}")
    if few_levels >= 0:
        print(f"note: the reconstructions were rounded to the input's integer type and span {few_levels} levels: "
              f"rounding adds an error of 0.29 (rms) to each value; --dtype float32 writes them unrounded")
    return written


#: the endings of an ``--output`` that names a file rather than a folder
OUTPUT_FILE_EXTENSIONS = tuple(_FORMATS) + (".dcm", ".h5", ".hdf5", ".npz")


def _output_file(path: Path) -> Path | None:
    """``path`` when it names an output file (an image format's extension, not an existing folder), else None."""
    return path if path.suffix.lower() in OUTPUT_FILE_EXTENSIONS and not path.is_dir() else None


def _move_single(written: list[str], folder: Path, target: Path) -> Path:
    """Move the one file written into the temporary ``folder`` to ``target`` (replacing it) and remove ``folder``;
    refuse (and remove the folder) when the input gave several files."""
    import shutil

    try:
        if len(written) != 1 or not Path(written[0]).is_file():
            raise ValueError(f"--output {target} names one file, but this input gives {len(written)} output files "
                             f"(e.g. one per slice or a DICOM series); give a folder")
        made = Path(written[0]).suffix.lower()
        if _FORMATS.get(made) != _FORMATS.get(target.suffix.lower()) and made != target.suffix.lower():
            # the format asked for could not hold the data (e.g. a stack as PNG: a TIFF, said in a note above)
            target = target.with_suffix(made)
        os.replace(written[0], target)
        return target
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_physics_fits(measurements: list, physics: type, name: str) -> None:
    """Refuse measurements a checkpoint trained with the physics class ``physics`` (registered as ``name``) cannot
    take: MRI k-space (a fastMRI file) under a physics without complex images (and images under one with), or
    operator parameters the physics
    does not have (a ``selfinv simulate`` file of another physics), naming what each needs."""
    from selfinv.data.sources import kspace_physics, kspace_problem

    for m in measurements:
        source = Path(m.source).name
        if m.kind == "kspace" and not physics.complex_image:
            mri = kspace_physics()
            raise ValueError(f"this checkpoint was trained for {name}; {source} holds MRI k-space (needs a "
                             f"checkpoint trained with physics {' or '.join(mri)}: 2 channels, real and imaginary)")
        problem = kspace_problem(m, physics, name) if physics.complex_image else None
        if problem:
            raise ValueError(f"this checkpoint was trained for {name}; {problem}")
        extra = sorted(set(m.params) - set(physics.param_names))
        if extra:
            raise ValueError(f"this checkpoint was trained for {name}, whose operator takes "
                             f"{list(physics.param_names) or 'no parameters'}; {source} comes with {extra} (a "
                             f"measurement of another physics; use a checkpoint trained for it)")


def _physics(run, physics_args: dict | None):
    """The checkpoint's physics (noise in normalised units), with ``physics_args`` overriding its arguments."""
    if not physics_args:
        return run.module.physics
    from selfinv.config import ConfigError, validate
    from selfinv.training.engine import build_physics

    cfg = run.config
    cfg.physics.args = {**cfg.physics.args, **dict(physics_args)}
    try:
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"--physics_args: {e}") from None
    return build_physics(cfg, run.normalization)


def _reconstruct(m, physics, run, estimator, tile, overlap, batch_size, complex_out, progress,
                 dtype: str = "input") -> np.ndarray:
    from selfinv.data.normalization import cast_to
    from selfinv.physics.masked import MaskedPhysics

    y = m.y[None]
    op = physics.for_measurement(tuple(m.y.shape))
    y, blank = _fill_blank(y, m, op)
    _check_finite(y, m, "input")
    params = {k: v[None] for k, v in m.params.items()}
    if not params and isinstance(op, MaskedPhysics):  # a file without its mask: the entries holding data
        params = {"mask": op.mask_from_measurement(y)}
    if params:
        op = op.with_params(**params)
    size = max(y.shape[-2:])
    if tile is None and op.image_domain and size > AUTO_TILE_ABOVE:
        tile = AUTO_TILE

    def reconstruct(y: Tensor, first: bool = True) -> Tensor:
        y_n = run.normalization.apply(y)
        if first:  # a pair's second measurement is in the same units: one warning
            _warn_units(y_n, op, m)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            if tile is not None and op.image_domain:
                from selfinv.data.tiling import tiled_apply

                bar = _progress(_n_tiles(y.shape[-2:], tile, min(overlap, tile - 1)), progress, "tiles")
                x_n = tiled_apply(lambda t: estimator(t, op, generator), y_n, tile=tile,
                                  overlap=min(overlap, tile - 1), batch_size=batch_size,
                                  progress=lambda done, total: bar.update_to(done))
                bar.close()
            else:
                x_n = estimator(y_n, op, generator)
        return run.normalization.undo(x_n)

    x = reconstruct(y)
    if m.y2 is not None:  # the second measurement of a pair: the mean of the two reconstructions
        y2, _ = _fill_blank(m.y2[None].to(y.dtype), m, op, warn=False)  # blank where y is (with_pairs)
        _check_finite(y2, m, "input (its pair)")
        x = (x + reconstruct(y2, first=False)) / 2
    _check_finite(x, m, "reconstruction")
    if blank is not None:
        if blank.shape[-2:] != x.shape[-2:]:
            blank = torch.nn.functional.interpolate(blank.float(), size=tuple(x.shape[-2:]), mode="nearest") > 0.5
        x = x.masked_fill(blank.expand_as(x), float("nan"))
    x = x[0]
    if op.complex_image and not complex_out:
        x = x.pow(2).sum(0, keepdim=True).sqrt()
    keep_dtype = dtype == "input" and m.kind == "image" and (op.image_domain or type(op).__name__ == "Inpainting")
    return cast_to(x, m.dtype if keep_dtype else "float32")


def _fill_blank(y: Tensor, m, op, warn: bool = True) -> tuple[Tensor, Tensor | None]:
    """A FITS image's blank (NaN) pixels under an image-domain operator (``fill_blank_pixels``): the network
    sees them filled with the image's median and the output keeps them blank (the mask resized to the output by
    nearest neighbour), with a warning. A NaN anywhere else stays an error (``_check_finite``)."""
    from selfinv.data.sources import fill_blank_pixels

    y, blank = fill_blank_pixels(y, m, op.image_domain)
    if blank is not None and warn:
        warnings.warn(f"{m.name}: {int(blank.sum())} blank (NaN) pixel(s) of {y.numel()}: filled with the image's "
                      f"median for the network and left blank in the output", UserWarning, stacklevel=3)
    return y, blank


def _check_finite(t: Tensor, m, what: str) -> None:
    bad = ~torch.isfinite(t)
    n = int(bad.sum())
    if n:
        first = tuple(int(i) for i in bad.nonzero()[0].tolist()[1:])
        hint = ("remove or inpaint them first" if what == "input" else
                "the network produced them (a diverged checkpoint, or an input far outside the training data)")
        raise ValueError(f"{m.name} ({m.source}): {n} non-finite value(s) (NaN/inf) in the {what}, the first at "
                         f"(channel, row, column) {first}; {hint}; nothing written for it")


def _warn_units(y_n: Tensor, op, m) -> None:
    """Warn when the normalised input lies far outside the training range (about [0, 1])."""
    from selfinv.data.user_data import far_from_unit_range

    span = far_from_unit_range(y_n if op.image_domain else op.image_estimate(y_n).abs(), sample=1_000_000)
    if span is not None:
        lo, hi = span
        warnings.warn(f"{m.name}: after the checkpoint's normalisation its values span [{lo:.3g}, {hi:.3g}], far "
                      f"from the about [0, 1] of the training data: was the network trained on data in these "
                      f"units (dtype {m.dtype})?", UserWarning, stacklevel=3)


def _stem(source: str, m, names: set[str], key: str | None = None) -> str:
    """The output name of ``source``: its file (or folder) name, with the array's name when ``key`` chose one of
    an NPZ / HDF5 file's arrays (``--key a`` and ``--key b`` of one file do not write the same output)."""
    base = Path(source).name if Path(source).is_dir() else Path(source).stem
    if key is not None and Path(source).suffix.lower() in (".npz", ".h5", ".hdf5"):
        base = f"{base}_{key.strip('/').replace('/', '_')}"  # an HDF5 path (group/array) is one file name
    stem, k = base, 2
    while stem in names:
        stem, k = f"{base}_{k}", k + 1
    names.add(stem)
    return stem


def _write(out_dir: Path, stem: str, fmt: str, slices: list[np.ndarray], input_suffix: str = "",
           pixel_size: dict | None = None, header_from: str | None = None, history: str = "selfinv",
           name: str = "") -> list[str]:
    """Write the reconstructions of one input file (``name``) as ``fmt``, with the input's own extension when it is
    one of that format's (``.mrcs`` stays ``.mrcs``), its pixel size, and for FITS the header of ``header_from``.
    What PNG cannot hold (a stack, float data) is written as TIFF, with a note saying why."""
    from selfinv.data.writers import FORMAT_EXTENSIONS, STACK_FORMATS, png_unfit, write_stack

    if fmt not in STACK_FORMATS:
        raise ValueError(f"--format must be one of {sorted(STACK_FORMATS)}, got {fmt!r}")
    ext = input_suffix if input_suffix in FORMAT_EXTENSIONS[fmt] else STACK_FORMATS[fmt]
    why = png_unfit(slices[0].dtype, (len(slices), *slices[0].shape)) if fmt == "png" else None
    if why is not None:
        fmt, ext = "tiff", ".tif"
        print(f"note: {name or stem}: PNG cannot hold {why}: wrote TIFF instead")
    shapes = {s.shape for s in slices}
    if len(shapes) == 1:
        return [str(write_stack(out_dir / f"{stem}{ext}", np.stack(slices), pixel_size, header_from, history))]
    width = max(4, int(math.log10(len(slices))) + 1)
    return [str(write_stack(out_dir / f"{stem}_{i:0{width}d}{ext}", s[None], pixel_size, None, history))
            for i, s in enumerate(slices)]


def _dicom_writable(ms: list, slices: list[np.ndarray], image_domain: bool) -> str | None:
    """None when the reconstructions of one input can be written as DICOM with their inputs' headers, else why
    not: the input is not DICOM, the output's channels are not the input's (grayscale or RGB), or it is not an
    image of the input's field of view (a sinogram or k-space reconstructed to an image of another size)."""
    if any(m.origin is None for m in ms):
        return "DICOM output takes the header of a DICOM input, and this input is not DICOM"
    from selfinv.data.readers import dcmread
    from selfinv.data.writers import dicom_channels

    channels = dicom_channels(dcmread(ms[0].origin[0], stop_before_pixels=True))
    if any(s.shape[0] != channels for s in slices):
        return (f"the reconstruction has {slices[0].shape[0]} channel(s); this input's DICOM output holds "
                f"{'RGB' if channels == 3 else 'grayscale'} images")
    if _resized(ms, slices) and not image_domain:
        return "the reconstruction is not an image of the measurement's grid (its header would not describe it)"
    return None


def _resized(ms: list, slices: list[np.ndarray]) -> bool:
    """Whether a reconstruction's size differs from its measurement's."""
    return any(tuple(m.y.shape[-2:]) != tuple(s.shape[-2:]) for m, s in zip(ms, slices, strict=True))


def _write_dicom(out_dir: Path, stem: str, ms: list, slices: list[np.ndarray], series: bool,
                 pixel_size: dict | None, description: str) -> list[str]:
    """Write the reconstructions of one DICOM input as DICOM files with the headers of the files they came from,
    one derived series per input series: a folder gives ``OUT/<folder>/<each file's name>``, a file
    ``OUT/<its name>``."""
    from pydicom.uid import generate_uid

    from selfinv.data.readers import dcmread
    from selfinv.data.writers import write_dicom

    derived: dict[str, str] = {}  # input series -> its derived series (a folder may hold several series)
    frames: dict[str, list[tuple[int, np.ndarray]]] = {}
    for m, s in zip(ms, slices, strict=True):
        frames.setdefault(m.origin[0], []).append((m.origin[1], s))  # (C, H, W): grayscale or RGB
    written = []
    for file, items in frames.items():
        name = Path(file).name
        target = out_dir / stem / name if series else out_dir / (stem + Path(file).suffix)
        stack = np.stack([a for _, a in sorted(items, key=lambda t: t[0])])
        source_series = str(getattr(dcmread(file, stop_before_pixels=True), "SeriesInstanceUID", ""))
        series_uid = derived.setdefault(source_series, generate_uid())
        written.append(str(write_dicom(target, stack, file, series_uid, pixel_size, description)))
    return written


def _n_tiles(size, tile: int, overlap: int) -> int:
    from selfinv.data.tiling import tile_starts

    h, w = (int(s) for s in size)
    return len(tile_starts(h, min(tile, h), overlap)) * len(tile_starts(w, min(tile, w), overlap))


class _Bar:
    """A tqdm progress bar on stderr when it is a terminal (or ``SELFINV_PROGRESS=1``), else nothing."""

    def __init__(self, total: int, enabled: bool, unit: str):
        self.bar = None
        if enabled and total > 1 and (sys.stderr.isatty() or os.environ.get("SELFINV_PROGRESS") == "1"):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="reconstructing", unit=unit.rstrip("s"), file=sys.stderr,
                            leave=unit == "images")

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def update_to(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(total: int, enabled: bool, unit: str) -> _Bar:
    return _Bar(total, enabled, unit)
