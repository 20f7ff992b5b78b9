"""``selfinv simulate``: a measurement file made from clean images, for method development and teaching.

The clean images are a bundled data set (``data.dataset``, split ``--split``) or
**the user's own** (``data.path``: any format of ``selfinv.data.sources``, kept in
their units; the config's noise levels are in those units). Each image goes
through the config's physics — a fresh operator draw per image where the operator
is random (masks), the noise of ``physics.noise`` — and the file keeps ``y``, the
operator parameters and the clean image ``x`` (``selfinv.data.measurements``), so
``selfinv fit --data.path FILE`` trains on it and logs PSNR against ``x``.

The user's images are measured whole by image-domain operators (denoising, blur,
downsampling: any sizes, cropped to a multiple of the downsampling factor); other
operators, and the bundled training split, measure ``data.num_patches`` random
``data.patch_size`` patches (fixed crops for the bundled val/test splits).
Single-channel images become complex (zero imaginary part) for MRI.

Example::

    selfinv simulate --config configs/ct_ei.yaml --data.path ct_slices/ --output sinograms.npz
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from selfinv.config import RunConfig


def simulate(cfg: RunConfig, output: str, split: Literal["train", "val", "test"] = "train") -> str:
    """Write the measurements of clean images (see the module docstring) to ``output`` (.npz/.h5); returns it.

    Args:
        output: the measurement file to write (.npz or .h5).
        split: split of the bundled data set (ignored for data.path).
    """
    from selfinv.data.measurements import MeasurementDataset
    from selfinv.data.patches import fixed_crops, random_patches
    from selfinv.training.engine import build_physics

    d = cfg.data
    physics = build_physics(cfg)
    generator = torch.Generator().manual_seed(d.seed)
    if d.path is not None:
        from selfinv.data.sources import read_source

        images = [m.y for m in read_source(d.path, d.key)]
        source = {"source": str(d.path)}
    else:
        from selfinv.data.bundled import load_dataset
        from selfinv.training.engine import map_intensity

        images = [map_intensity(im, d.intensity_range) for im in load_dataset(d.dataset, split=split,
                                                                             **d.dataset_args).images]
        source = {"dataset": d.dataset, "split": split}
    if physics.image_domain and d.path is not None:
        factor = int(getattr(physics, "factor", 1))
        x: Tensor | list[Tensor] = [im[..., :im.shape[-2] // factor * factor, :im.shape[-1] // factor * factor]
                                    for im in images]
        if len({tuple(im.shape) for im in x}) == 1:
            x = torch.stack(x)
        size_note = "whole images"
    elif d.path is None and split != "train":
        x = fixed_crops(images, d.patch_size)
        size_note = f"{d.patch_size}x{d.patch_size} crops"
    else:
        x = random_patches(images, d.patch_size, d.num_patches, generator=generator)
        size_note = f"{d.patch_size}x{d.patch_size} random patches"
    if physics.complex_image:
        x = [torch.cat([im, torch.zeros_like(im)]) if im.shape[0] == 1 else im for im in x]
        x = torch.stack(x) if len({tuple(im.shape) for im in x}) == 1 else x
    ds = MeasurementDataset(x, physics, seed=d.seed + 1, keep_ground_truth=True, metadata=source)
    path = ds.save(output)
    shapes = sorted({tuple(v.shape) for v in ds.y})
    print(f"wrote {len(ds)} measurements ({size_note}; y {shapes[0] if len(shapes) == 1 else shapes}) to {path}")
    return str(path)
