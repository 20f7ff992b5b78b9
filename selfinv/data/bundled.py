"""Named, versioned data sets of clean images that ship inside installed packages.

Nothing is downloaded: the photographs come from the wheels of scikit-image,
PyWavelets, scikit-learn and matplotlib, the MRI slices from nilearn's MNI152
template. Every data set returns grayscale ``float32`` images in ``[0, 1]`` as
tensors of shape ``(1, H, W)`` and is split **by image** (or by slice range),
never by patch, so no image contributes to two splits.

| name | version | content | split |
|---|---|---|---|
| ``natural-gray`` | 1 | 22 photographs, ``rgb2gray`` | ``NATURAL_GRAY_SPLITS`` |
| ``natural-gray-anchor`` | 1 | the 15 training images + ``camera`` of the deepinv reference | ``..._ANCHOR_SPLITS`` |
| ``mri-slices`` | 1 | axial slices of the MNI152 T1 template, ``size x size`` | slice blocks, see ``mri_slice_split`` |

Example:
    >>> ds = load_dataset("natural-gray", split="test")
    >>> ds.names[0], ds.images[0].shape
    ('camera', torch.Size([1, 512, 512]))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

SPLITS = ("train", "val", "test")

#: ``natural-gray`` v1: fixed split by image. ``camera`` is in test (the reference
#: benchmark tests on ``camera()``). ``cat`` is not used: it is the same photo as ``chelsea``.
NATURAL_GRAY_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "brick", "chelsea", "coffee", "grass", "gravel", "hubble_deep_field",
              "immunohistochemistry", "moon", "page", "retina", "rocket", "text", "cell",
              "ascent", "china", "grace_hopper"),
    "val": ("clock", "aero"),
    "test": ("camera", "coins", "flower"),
}

#: ``natural-gray-anchor`` v1: exactly the workload of the reference workload ``bench_train.py`` (the anchor benchmark)
#: (trains on these 15 scikit-image images, tests on ``camera``). It has no validation image.
NATURAL_GRAY_ANCHOR_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "brick", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
              "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket",
              "text"),
    "val": (),
    "test": ("camera",),
}

#: ``mri-slices`` v1 split parameters (see ``mri_slice_split``).
MRI_BLOCK = 16
MRI_GAP = 4
MRI_MIN_FOREGROUND = 1.0 / 3.0


@dataclass
class BundledDataset:
    """Clean images of one split of a bundled data set.

    ``images`` is a list of ``(1, H, W)`` float32 tensors in ``[0, 1]`` (sizes may
    differ between images; ``mri-slices`` images are all ``size x size``).
    ``names`` identifies each image; ``metadata`` records the name, version, split
    and source. ``stack()`` gives a ``(N, 1, H, W)`` tensor when sizes agree.
    """

    name: str
    version: str
    split: str
    images: list[Tensor]
    names: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]

    def stack(self) -> Tensor:
        sizes = {tuple(im.shape) for im in self.images}
        if len(sizes) != 1:
            raise ValueError(
                f"cannot stack {self.name}/{self.split}: images have different shapes {sorted(sizes)}; "
                "use selfinv.data.patches (random_patches / fixed_crops) to get equal sizes"
            )
        return torch.stack(self.images)


# -- natural photographs ------------------------------------------------------------
def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data
        return getattr(data, name)()
    return load


def _pywt(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import pywt.data
        return getattr(pywt.data, name)()
    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image
        return load_sample_image(filename)
    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook as cbook
        import matplotlib.image as mpimg
        with cbook.get_sample_data(filename) as f:
            return mpimg.imread(f, format=filename.rsplit(".", 1)[-1])
    return load


_PHOTO_SOURCES: dict[str, tuple[str, Callable[[], np.ndarray]]] = {
    **{n: ("skimage.data", _skimage(n)) for n in (
        "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
        "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina",
        "rocket", "text")},
    "aero": ("pywt.data", _pywt("aero")),
    "ascent": ("pywt.data", _pywt("ascent")),
    "china": ("sklearn.datasets.load_sample_image", _sklearn("china.jpg")),
    "flower": ("sklearn.datasets.load_sample_image", _sklearn("flower.jpg")),
    "grace_hopper": ("matplotlib.cbook.get_sample_data", _matplotlib("grace_hopper.jpg")),
}


def to_gray_float(img: np.ndarray) -> np.ndarray:
    """Grayscale float32 in ``[0, 1]``: ``skimage.color.rgb2gray`` on RGB(A) (alpha dropped),
    ``skimage.img_as_float`` scaling for integer types (uint8 / 255)."""
    from skimage import color, img_as_float

    img = np.asarray(img)
    if img.ndim == 3:
        if img.shape[-1] not in (3, 4):
            raise ValueError(f"expected an (H, W) or (H, W, 3|4) image, got shape {img.shape}")
        img = color.rgb2gray(img_as_float(img[..., :3]))
    elif img.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3|4) image, got shape {img.shape}")
    return np.clip(img_as_float(img), 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    arr = to_gray_float(_PHOTO_SOURCES[name][1]())
    arr.flags.writeable = False  # cached: callers get copies
    return arr


def _photo_split(dataset: str, splits: dict[str, tuple[str, ...]], version: str, split: str
                 ) -> BundledDataset:
    names = list(splits[split])
    images = [torch.from_numpy(_photo(n).copy())[None] for n in names]
    meta = {"dataset": dataset, "version": version, "split": split, "names": names,
            "sources": {n: _PHOTO_SOURCES[n][0] for n in names},
            "splits": {k: list(v) for k, v in splits.items()},
            "conversion": "skimage.color.rgb2gray + img_as_float, float32 in [0, 1]"}
    return BundledDataset(dataset, version, split, images, names, meta)


def load_natural_gray(split: str = "train") -> BundledDataset:
    """``natural-gray`` v1: 22 bundled photographs in grayscale, split by image.

    * test: ``camera``, ``coins``, ``flower`` (sklearn)
    * val: ``clock``, ``aero`` (PyWavelets)
    * train: ``astronaut, brick, chelsea, coffee, grass, gravel, hubble_deep_field,
      immunohistochemistry, moon, page, retina, rocket, text, cell`` (scikit-image),
      ``ascent`` (PyWavelets), ``china`` (sklearn), ``grace_hopper`` (matplotlib).

    Images keep their native sizes (102 x 102 up to 1411 x 1411).
    """
    return _photo_split("natural-gray", NATURAL_GRAY_SPLITS, "1", split)


def load_natural_gray_anchor(split: str = "train") -> BundledDataset:
    """``natural-gray-anchor`` v1: the reference deepinv benchmark's images.

    train: the 15 scikit-image images of ``bench_train.py`` (``astronaut, brick,
    chelsea, clock, coffee, coins, grass, gravel, hubble_deep_field,
    immunohistochemistry, moon, page, retina, rocket, text``); test: ``camera``
    (the benchmark evaluates on its 64 non-overlapping 64 x 64 crops, see
    ``selfinv.data.patches.fixed_crops``); val: empty.
    """
    return _photo_split("natural-gray-anchor", NATURAL_GRAY_ANCHOR_SPLITS, "1", split)


# -- MRI slices ---------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _mni_slices(size: int) -> tuple[np.ndarray, np.ndarray]:
    """All kept axial slices ``(n, size, size)`` of the MNI152 template and their z indices."""
    try:
        from nilearn.datasets import load_mni152_template
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the 'mri-slices' data set needs nilearn: pip install selfinv[mri]") from e
    from skimage.transform import resize

    vol = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float64)  # (x, y, z)
    vol = np.clip(vol / vol.max(), 0.0, 1.0)  # template is skull-stripped, background 0
    fg = (vol > 0.1).mean(axis=(0, 1))
    keep = np.nonzero(fg >= MRI_MIN_FOREGROUND * fg.max())[0]
    X, Y, _ = vol.shape
    side = min(X, Y)  # square crop centred on the brain's bounding box
    xs, ys = np.nonzero(vol.max(axis=2) > 0.1)
    cx, cy = (xs.min() + xs.max()) // 2, (ys.min() + ys.max()) // 2
    x0 = int(np.clip(cx - side // 2, 0, X - side))
    y0 = int(np.clip(cy - side // 2, 0, Y - side))
    out = np.empty((len(keep), size, size), dtype=np.float32)
    for i, z in enumerate(keep):
        sl = vol[x0:x0 + side, y0:y0 + side, z].T[::-1]  # rows = posterior->anterior flipped: nose up
        out[i] = np.clip(resize(sl, (size, size), order=1, anti_aliasing=True, mode="edge"), 0, 1)
    out.flags.writeable = False
    return out, keep


def mri_slice_split(z_indices: np.ndarray, block: int = MRI_BLOCK, gap: int = MRI_GAP
                    ) -> dict[str, np.ndarray]:
    """Positions (into ``z_indices``) of each split of ``mri-slices`` v1.

    The kept slices, in z order, are cut into blocks of ``block`` consecutive
    slices; block ``k`` goes to test if ``k % 5 == 2``, to val if ``k % 5 == 4``,
    to train otherwise; the first ``gap`` slices of every block are dropped, so
    two slices of different splits are always at least ``gap + 1`` mm apart
    (the template is smooth across neighbouring slices).
    """
    pos = np.arange(len(z_indices))
    k, r = pos // block, pos % block
    kept = r >= gap
    return {"test": pos[kept & (k % 5 == 2)], "val": pos[kept & (k % 5 == 4)],
            "train": pos[kept & (k % 5 != 2) & (k % 5 != 4)]}


def load_mri_slices(split: str = "train", size: int = 128) -> BundledDataset:
    """``mri-slices`` v1: axial slices of nilearn's MNI152 T1 template (1 mm, 197 x 233 x 189).

    The volume is divided by its maximum (it is already skull-stripped, so the
    background is 0), slices whose foreground (> 0.1) area is below 1/3 of the
    largest slice's are skipped, each slice is cropped to a 197 x 197 square
    centred on the brain and resized (bilinear, anti-aliased) to ``size x size``
    (default 128). 113 slices are kept (z = 26..138); split by slice blocks with
    gaps (``mri_slice_split``): 60 / 12 / 12 slices (train / val / test), test
    z = 62..73, val z = 94..105.

    These are **magnitude** images: MRI k-space built from them is simulated
    (real-valued image, no phase, no coil sensitivities).
    """
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    slices, z = _mni_slices(size)
    pos = mri_slice_split(z)[split]
    names = [f"mni152_z{int(z[p]):03d}" for p in pos]
    images = [torch.from_numpy(slices[p].copy())[None] for p in pos]
    meta = {"dataset": "mri-slices", "version": "1", "split": split, "names": names,
            "size": size, "z_indices": [int(z[p]) for p in pos],
            "source": "nilearn.datasets.load_mni152_template(resolution=1)",
            "block": MRI_BLOCK, "gap": MRI_GAP,
            "note": "magnitude images; k-space is simulated from them"}
    return BundledDataset("mri-slices", "1", split, images, names, meta)


_DATASETS: dict[str, tuple[str, Callable[..., BundledDataset]]] = {
    "natural-gray": ("1", load_natural_gray),
    "natural-gray-anchor": ("1", load_natural_gray_anchor),
    "mri-slices": ("1", load_mri_slices),
}


def dataset_options(name: str) -> list[str]:
    """The keyword options of bundled data set ``name`` (``load_dataset(name, split, **options)``)."""
    import inspect

    if name not in _DATASETS:
        raise ValueError(f"unknown data set '{name}'; known data sets: {sorted(_DATASETS)}")
    params = inspect.signature(_DATASETS[name][1]).parameters
    return [p for p in params if p != "split"]


def list_datasets() -> dict[str, str]:
    """Known data set names and their versions."""
    return {name: version for name, (version, _) in _DATASETS.items()}


def load_dataset(name: str, split: str = "train", version: str | None = None, **kwargs: Any
                 ) -> BundledDataset:
    """Load one split of a bundled data set by name.

    Args:
        name: one of ``list_datasets()``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        version: if given, must equal the data set's version (guards results
            computed on an older definition of the split).
        **kwargs: data-set options, e.g. ``size`` for ``mri-slices``.
    """
    if name not in _DATASETS:
        raise ValueError(f"unknown data set '{name}'; known data sets: {sorted(_DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got '{split}'")
    have, loader = _DATASETS[name]
    if version is not None and str(version) != have:
        raise ValueError(f"data set '{name}' is version {have}, but version {version} was requested")
    return loader(split, **kwargs)
