"""Training and validation sets from a user's own measurements (``data.path``).

``TrainingData.from_measurements`` turns the measurements read by
``selfinv.data.sources`` into the two data sets of a run, in normalised units
(``selfinv.data.normalization``):

* **image-domain operators** (denoising, blur, downsampling: the measurement is an
  image of the scene): training items are random ``patch_size`` patches cut from the
  training images, ``num_patches`` per epoch, drawn afresh every epoch (position
  seeded by ``(seed, epoch, item)``), an image with more positions drawn more often.
  Validation holds out **whole images** when there are several (``val_fraction`` of
  them, at least one) and, when there is a single image, a **disjoint region**: the
  bottom ``val_fraction`` of its rows (at least one patch high), training patches
  never reaching into it. Validation items are fixed crops of the held-out area.
  Blank pixels (NaN in a floating-point image: FITS's undefined values, a mosaic's edge) are
  avoided: training patches are drawn uniformly among the positions free of them,
  validation crops holding one are left out, and the normalisation ignores them.
* **other operators** (MRI k-space, CT sinograms, inpainting) and ``selfinv simulate``
  files (already cut to the training size): items are whole measurements with their operator parameters (the MRI mask
  of each file); ``val_fraction`` of them are held out. Measurements of different
  sizes are batched by size (``MeasurementDataModule``).

``val_fraction = 0`` trains on everything and validates nothing (the last checkpoint
is the result). Ground truth (``data.target``, aligned one to one with the
measurements) travels with the items for logged PSNR/SSIM only.

Example::

    >>> import torch
    >>> from selfinv.data.sources import Measurement
    >>> ms = [Measurement(y=torch.rand(1, 100, 80) * 1000, name="a", source="a.tif", dtype="uint16")]
    >>> data = TrainingData.from_measurements(ms, image_domain=True, patch_size=32, num_patches=10,
    ...                                       val_fraction=0.2, affine=True)
    >>> len(data.train), tuple(data.train[0]["y"].shape), data.normalization.kind
    (10, (1, 32, 32), 'affine')
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfinv.data.normalization import Mode, Normalization, fit_normalization
from selfinv.data.sources import Measurement

#: redraws of a patch position that holds a blank pixel before picking among the free positions directly
MAX_REDRAWS = 1000


def blank_free_positions(blank: Tensor, size: int) -> Tensor:
    """``(H - size + 1, W - size + 1)`` bool map: True where the ``size`` patch with that top-left corner holds
    no blank pixel of ``blank`` ``(H, W)`` (box sums of an integral image).

    Example::

        >>> blank = torch.zeros(4, 5, dtype=torch.bool)
        >>> blank[1, 1] = True
        >>> blank_free_positions(blank, 2).int().tolist()
        [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]]
    """
    integral = torch.nn.functional.pad(blank.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    s = size
    inside = integral[s:, s:] - integral[:-s, s:] - integral[s:, :-s] + integral[:-s, :-s]
    return inside == 0


class RandomPatches(Dataset):
    """``num_patches`` random ``size`` patches of ``images`` (``(C, H, W)``, sizes may differ) per epoch.

    Item ``v`` (an index the ``EpochSeededSampler`` offsets by ``epoch * len(self)``) is a patch whose image
    and position are drawn from a generator seeded with ``(seed, v)``: reproducible, fresh every epoch,
    independent of the loading order. ``regions[i] = (top, bottom)`` limits the rows of image ``i``. A patch
    never holds a blank (NaN) pixel: in an image that has some, positions are drawn uniformly among those
    free of them (by rejection against the map of such positions).
    """

    fresh_each_epoch = True

    def __init__(self, images: Sequence[Tensor], size: int, num_patches: int, seed: int = 0,
                 regions: Sequence[tuple[int, int]] | None = None, targets: Sequence[Tensor | None] | None = None,
                 seconds: Sequence[Tensor | None] | None = None):
        self.images, self.size, self.n, self.seed = list(images), int(size), int(num_patches), int(seed)
        self.regions = list(regions) if regions is not None else [(0, im.shape[-2]) for im in self.images]
        self.targets = list(targets) if targets is not None else [None] * len(self.images)
        #: per image: its second noisy measurement (Noise2Noise pairs), cut at the same positions, or None
        self.seconds = list(seconds) if seconds is not None else [None] * len(self.images)
        counts = []
        #: per image: None (no blank pixel) or the bool map (rows, cols) of patch positions free of blank pixels
        self._free: list[Tensor | None] = []
        for im, (top, bottom) in zip(self.images, self.regions, strict=True):
            rows, cols = bottom - top - self.size + 1, im.shape[-1] - self.size + 1
            blank = torch.isnan(im[:, top:bottom]).any(0) if im.is_floating_point() else None
            if blank is None or rows <= 0 or cols <= 0 or not bool(blank.any()):
                self._free.append(None)
                counts.append(max(rows, 0) * max(cols, 0))
            else:
                free = blank_free_positions(blank, self.size)
                self._free.append(free)
                counts.append(int(free.sum()))
        if sum(counts) == 0:
            blanks = any(f is not None for f in self._free)
            raise ValueError(f"data.patch_size {self.size} does not fit in any training image (sizes "
                             f"{sorted({tuple(im.shape[-2:]) for im in self.images})})"
                             + (" between their blank (NaN) pixels; lower data.patch_size" if blanks else ""))
        self._weights = torch.tensor(counts, dtype=torch.float64)

    def __len__(self) -> int:
        return self.n

    @property
    def has_ground_truth(self) -> bool:
        return all(t is not None for t in self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        i = int(torch.multinomial(self._weights, 1, generator=g))
        im, (top, bottom) = self.images[i], self.regions[i]
        s = self.size
        r = top + int(torch.randint(0, bottom - top - s + 1, (1,), generator=g))
        c = int(torch.randint(0, im.shape[-1] - s + 1, (1,), generator=g))
        free = self._free[i]
        if free is not None:  # uniform among the blank-free positions: redraw until one is
            for _ in range(MAX_REDRAWS):
                if bool(free[r - top, c]):
                    break
                r = top + int(torch.randint(0, free.shape[0], (1,), generator=g))
                c = int(torch.randint(0, free.shape[1], (1,), generator=g))
            else:  # very few free positions: the k-th of them
                k = int(torch.randint(0, int(free.sum()), (1,), generator=g))
                pos = int(free.reshape(-1).nonzero()[k])
                r, c = top + pos // free.shape[1], pos % free.shape[1]
        item: dict[str, Any] = {"y": im[:, r:r + s, c:c + s], "params": {}}
        if self.targets[i] is not None:
            item["x"] = self.targets[i][:, r:r + s, c:c + s]
        if self.seconds[i] is not None:
            item["y2"] = self.seconds[i][:, r:r + s, c:c + s]
        return item


class FixedItems(Dataset):
    """A list of ready items ``{"y", "params", "x"?}`` (validation crops, whole measurements)."""

    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(it["y"].shape) for it in self.items]

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.items) and all("x" in it for it in self.items)


def _crops(image: Tensor, target: Tensor | None, top: int, bottom: int, size: int,
           second: Tensor | None = None) -> list[dict[str, Any]]:
    """Non-overlapping ``size`` crops covering rows ``[top, bottom)`` (last row/column of crops flush with the edge),
    of ``image`` and, at the same places, of its ground truth ``target`` and second noisy measurement ``second``."""
    H, W = bottom - top, image.shape[-1]
    rows = sorted({top + min(k * size, H - size) for k in range(max(1, math.ceil(H / size)))})
    cols = sorted({min(k * size, W - size) for k in range(max(1, math.ceil(W / size)))})
    out = []
    for r in rows:
        for c in cols:
            item: dict[str, Any] = {"y": image[:, r:r + size, c:c + size], "params": {}}
            if target is not None:
                item["x"] = target[:, r:r + size, c:c + size]
            if second is not None:
                item["y2"] = second[:, r:r + size, c:c + size]
            out.append(item)
    return out


def blank_free_areas(image: Tensor, size: int, top: int = 0, bottom: int | None = None) -> list[Tensor]:
    """Rows ``[top, bottom)`` of ``image`` ``(C, H, W)`` whole when they hold no blank (NaN) pixel, else their
    non-overlapping ``size`` crops that hold none (what noise levels and correlations are estimated from)."""
    area = image[:, top:bottom]
    if not bool(torch.isnan(area).any()):
        return [area]
    bottom = image.shape[-2] if bottom is None else bottom
    size = min(size, bottom - top, image.shape[-1])
    return [c["y"] for c in _crops(image, None, top, bottom, size) if not bool(torch.isnan(c["y"]).any())]


def _evenly(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    idx = torch.linspace(0, len(items) - 1, k).round().long().unique().tolist()
    return [items[i] for i in idx]


#: the smallest training patch (``data.patch_size``)
MIN_PATCH = 4


def far_from_unit_range(v: Tensor, sample: int = 100_000) -> tuple[float, float] | None:
    """The 0.1 / 99.9 percentiles of normalised values ``v`` (finite ones, a seeded sample of ``sample``) when they
    lie far from the about ``[0, 1]`` training data have (below -1, above 3, or all under 0.05), else None."""
    v = v.detach().reshape(-1).float()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return None
    if v.numel() > sample:
        v = v[torch.randint(0, v.numel(), (sample,), generator=torch.Generator().manual_seed(0))]
    lo, hi = (float(q) for q in torch.quantile(v, torch.tensor([0.001, 0.999])))
    return (lo, hi) if lo < -1.0 or hi > 3.0 or hi < 0.05 else None


def warn_mixed_units(ms: list[Measurement], norm: Normalization) -> list[str]:
    """Warn when some measurements lie far from the about ``[0, 1]`` that ``norm`` (fitted on all of them) gives
    the whole, e.g. 8-bit and 16-bit images in one folder: the network then trains on data in two units and
    ``predict`` finds some of its own training files out of range. Returns the names warned about.

    Example::

        >>> import warnings, torch
        >>> from selfinv.data.sources import Measurement
        >>> ms = [Measurement(y=torch.rand(1, 8, 8) * s, source="f", name=n) for s, n in ((255, "a"), (65535, "b"))]
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     warn_mixed_units(ms, Normalization(0.0, 65535.0))
        ['a']
    """
    if len(ms) < 2:
        return []
    odd = []
    for m in ms:
        span = far_from_unit_range(norm.apply(m.y.float()))
        if span is not None:
            odd.append((m.name, *span))
    if not odd or len(odd) == len(ms):
        return []
    names = ", ".join(f"{n} [{lo:.3g}, {hi:.3g}]" for n, lo, hi in odd[:3]) + (", ..." if len(odd) > 3 else "")
    warnings.warn(f"data.path mixes measurements in different units: after the normalisation fitted on all of them "
                  f"{len(odd)} of {len(ms)} span far from the others' about [0, 1] ({names}), e.g. 8-bit and 16-bit "
                  f"images in one folder; train each kind on its own or convert them to the same units",
                  UserWarning, stacklevel=3)
    return [n for n, _, _ in odd]


@dataclass
class TrainingData:
    """The train / validation sets of a run in normalised units, and the normalisation itself."""

    train: Dataset
    val: Dataset | None
    normalization: Normalization
    #: normalised training measurements (whole images): what ``sigma: auto`` is estimated from
    noise_samples: list[Tensor]
    has_ground_truth: bool
    #: channels of every measurement (colour planes, complex parts): the network's in and out channels
    channels: int = 1

    @classmethod
    def from_measurements(cls, measurements: list[Measurement], *, image_domain: bool, patch_size: int,
                          num_patches: int, val_fraction: float, seed: int = 0, affine: bool = False,
                          normalize: Mode = "auto", targets: list[Tensor] | None = None,
                          back_project: Callable[[Measurement], Tensor] | None = None,
                          normalization: Normalization | None = None,
                          offset: float | None = None) -> "TrainingData":
        """See the module docstring. ``affine``: whether the normalisation may use an offset;
        ``back_project(m)``: ``physics.image_estimate(y)`` of a measurement, ``A† y`` for most (its image-domain
        values set the scale for non-image-domain operators); ``normalization``: use this one (a trained run's)
        instead of fitting; ``offset``: a known detector offset of image-domain measurements (``data.offset``)."""
        if not measurements:
            raise ValueError("no measurements to train on")
        if targets is not None and len(targets) != len(measurements):
            raise ValueError(f"data.target holds {len(targets)} images but data.path {len(measurements)} "
                             f"measurements; they must correspond one to one")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        # measurements written by 'selfinv simulate' are already training-sized: used whole, never re-cut
        image_domain = image_domain and any(m.kind != "simulated" for m in measurements)
        if offset is not None and not image_domain:
            raise ValueError(f"data.offset ({offset:g}) applies to image-domain measurements (denoising, blur, "
                             f"downsampling) only; subtract a detector offset from sinograms or k-space yourself")
        n = len(measurements)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
        n_val = 0 if val_fraction == 0 else max(1, math.ceil(val_fraction * n))
        single = image_domain and n == 1 and val_fraction > 0
        if not single and n_val >= n:
            raise ValueError(f"data.val_fraction={val_fraction} leaves no training measurement out of {n}: "
                             f"{'lower it or ' if n > 1 else ''}use data.val_fraction: 0 (no validation)")
        val_ids = set() if single else set(order[:n_val])
        train_ids = [i for i in range(n) if i not in val_ids]
        if image_domain:
            return cls._image_domain(measurements, targets, train_ids, sorted(val_ids), single, patch_size,
                                     num_patches, val_fraction, seed, affine, normalize, normalization, offset)
        if normalization is not None:
            norm = normalization
        else:
            values = [back_project(measurements[i]).abs() if back_project else measurements[i].y
                      for i in train_ids[:16]]
            norm = fit_normalization(values, affine=False, mode=normalize, seed=seed)

        def item(i: int) -> dict[str, Any]:
            m = measurements[i]
            it: dict[str, Any] = {"y": norm.apply(m.y), "params": dict(m.params)}
            x = targets[i] if targets is not None else m.x
            if x is not None:
                it["x"] = norm.apply(x)
            if m.y2 is not None:
                it["y2"] = norm.apply(m.y2)
            return it

        train = FixedItems([item(i) for i in train_ids])
        val = FixedItems([item(i) for i in sorted(val_ids)]) if val_ids else None
        return cls(train, val, norm, [it["y"] for it in train.items[:256]], "x" in train.items[0])

    @classmethod
    def _image_domain(cls, ms: list[Measurement], targets: list[Tensor] | None, train_ids: list[int],
                      val_ids: list[int], single: bool, size: int, num_patches: int, val_fraction: float,
                      seed: int, affine: bool, normalize: Mode, normalization: Normalization | None,
                      offset: float | None = None) -> "TrainingData":
        small = [m for m in ms if min(m.y.shape[-2:]) < size]
        if small:
            m = small[0]
            side = min(m.y.shape[-2:])
            if side < MIN_PATCH:
                raise ValueError(f"{m.name} ({m.source}) is {tuple(m.y.shape[-2:])} pixels: too small to train on "
                                 f"(patches of at least {MIN_PATCH} pixels); remove it from data.path")
            raise ValueError(f"data.patch_size {size} is larger than {m.name} ({m.source}), of size "
                             f"{tuple(m.y.shape[-2:])}; lower data.patch_size to at most {side}")
        if targets is not None:
            for m, t in zip(ms, targets, strict=True):
                if tuple(t.shape[-2:]) != tuple(m.y.shape[-2:]):
                    raise ValueError(f"data.target: the target of {m.name} ({m.source}) has size "
                                     f"{tuple(t.shape[-2:])} but the measurement {tuple(m.y.shape[-2:])}; a target "
                                     f"is the clean image of its measurement, pixel for pixel, in the same order")
        xs = [(targets[i] if targets is not None else ms[i].x) for i in range(len(ms))]
        regions: dict[int, tuple[int, int]] = {}
        val_regions: dict[int, tuple[int, int]] = {}
        for i in train_ids:
            regions[i] = (0, ms[i].y.shape[-2])
        if single:
            H = ms[0].y.shape[-2]
            band = max(size, math.ceil(val_fraction * H))
            if H - band < size:
                raise ValueError(f"the single image {ms[0].name} ({ms[0].source}) has {H} rows: too few to hold out "
                                 f"{band} rows for "
                                 f"validation and still cut {size}-row training patches; lower data.patch_size or "
                                 f"data.val_fraction, or use data.val_fraction: 0")
            regions[0] = (0, H - band)
            val_regions[0] = (H - band, H)
        else:
            for i in val_ids:
                val_regions[i] = (0, ms[i].y.shape[-2])
        norm = normalization or fit_normalization([ms[i].y[:, a:b] for i, (a, b) in regions.items()],
                                                  affine=affine, mode=normalize, seed=seed, offset=offset)
        if normalization is None:
            warn_mixed_units(ms, norm)
        images = {i: norm.apply(ms[i].y) for i in set(regions) | set(val_regions)}
        truths = {i: (norm.apply(xs[i]) if xs[i] is not None else None) for i in images}
        seconds = {i: (norm.apply(ms[i].y2) if ms[i].y2 is not None else None) for i in images}
        ids = sorted(regions)
        train = RandomPatches([images[i] for i in ids], size, num_patches, seed,
                              [regions[i] for i in ids], [truths[i] for i in ids], [seconds[i] for i in ids])
        val = None
        if val_regions:
            crops = [c for i in sorted(val_regions)
                     for c in _crops(images[i], truths[i], *val_regions[i], size, seconds[i])
                     if not bool(torch.isnan(c["y"]).any())]  # crops holding a blank (NaN) pixel left out
            if not crops:
                raise ValueError(f"every {size}-pixel validation crop holds blank (NaN) pixels; lower data.patch_size "
                                 f"or use data.val_fraction: 0")
            val = FixedItems(_evenly(crops, max(8, math.ceil(val_fraction * num_patches))))
        # what 'sigma: auto' is estimated from: whole training areas, or their blank-free crops
        samples = [t for i, (a, b) in regions.items() for t in blank_free_areas(images[i], size, a, b)]
        return cls(train, val, norm, samples[:256], all(truths[i] is not None for i in ids))
