"""selfinv.data: bundled data sets, patches, measurement data sets."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from selfinv.data import (
    MeasurementDataset,
    PatchDataset,
    collate_measurements,
    fixed_crops,
    grid_patches,
    list_datasets,
    load_dataset,
    random_patches,
)
from selfinv.data.bundled import NATURAL_GRAY_SPLITS, mri_slice_split
from selfinv.data.patches import random_positions
from selfinv.physics import Denoising, GaussianNoise, LinearPhysics
from selfinv.utils import rng

# The reference deepinv workload (/work/shared/anchor/bench_train.py), copied by name.
ANCHOR_TRAIN = ["astronaut", "brick", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
                "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text"]


# -- bundled ---------------------------------------------------------------------------
def test_list_and_unknown_name():
    names = list_datasets()
    assert {"natural-gray", "natural-gray-anchor", "mri-slices"} <= set(names)
    with pytest.raises(ValueError, match="natural-gray"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_dataset("natural-gray", split="training")
    with pytest.raises(ValueError, match="version"):
        load_dataset("natural-gray", split="val", version="0")


def test_natural_gray_split_by_image_and_values():
    parts = {s: load_dataset("natural-gray", split=s) for s in ("train", "val", "test")}
    names = {s: set(d.names) for s, d in parts.items()}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"]) \
        and not (names["val"] & names["test"])
    assert "camera" in names["test"] and len(names["val"]) == 2
    assert names == {s: set(v) for s, v in NATURAL_GRAY_SPLITS.items()}
    # No duplicated photograph across splits either (chelsea == cat in skimage): compare pixels.
    fingerprints = {s: {(tuple(im.shape), round(float(im.mean()), 6)) for im in d.images} for s, d in parts.items()}
    assert not (fingerprints["train"] & fingerprints["test"]) and not (fingerprints["train"] & fingerprints["val"])
    for d in parts.values():
        for im in d.images:
            assert im.dtype == torch.float32 and im.ndim == 3 and im.shape[0] == 1
            assert float(im.min()) >= 0.0 and float(im.max()) <= 1.0
    from skimage import color, data, img_as_float
    cam = parts["test"].images[parts["test"].names.index("camera")]
    assert torch.equal(cam[0], torch.from_numpy(img_as_float(data.camera()).astype(np.float32)))
    astro = parts["train"].images[parts["train"].names.index("astronaut")]
    ref = color.rgb2gray(data.astronaut()).astype(np.float32)
    assert torch.allclose(astro[0], torch.from_numpy(ref), atol=1e-6)  # float32 rounding only


def test_loading_is_deterministic_and_cache_is_protected():
    a = load_dataset("natural-gray", split="val")
    a.images[0].fill_(0.5)  # mutating a returned image must not touch the cache
    b = load_dataset("natural-gray", split="val")
    c = load_dataset("natural-gray", split="val")
    assert all(torch.equal(u, v) for u, v in zip(b.images, c.images, strict=True))
    assert not torch.all(b.images[0] == 0.5)


def test_anchor_workload():
    train = load_dataset("natural-gray-anchor", split="train")
    test = load_dataset("natural-gray-anchor", split="test")
    assert train.names == ANCHOR_TRAIN and test.names == ["camera"]
    assert len(load_dataset("natural-gray-anchor", split="val")) == 0
    crops = fixed_crops(test.images, 64)  # the benchmark's 64 non-overlapping crops
    assert crops.shape == (64, 1, 64, 64)
    ref = test.images[0][0].unfold(0, 64, 64).unfold(1, 64, 64).reshape(-1, 1, 64, 64)
    assert torch.equal(crops, ref)
    # 15 images with patch 64 / stride 32: as many patches as the benchmark's unfold
    n_ref = sum(im[0].unfold(0, 64, 32).unfold(1, 64, 32).reshape(-1, 64, 64).shape[0] for im in train.images)
    assert len(PatchDataset(train.images, 64, stride=32)) == n_ref


def test_mri_slices_split_with_gaps():
    import nilearn  # noqa: F401
    parts = {s: load_dataset("mri-slices", split=s, size=64) for s in ("train", "val", "test")}
    z = {s: np.array(d.metadata["z_indices"]) for s, d in parts.items()}
    for s, d in parts.items():
        x = d.stack()
        assert x.shape[1:] == (1, 64, 64) and x.dtype == torch.float32 and len(d) >= 10
        assert float(x.min()) >= 0 and float(x.max()) <= 1
        # skipped near-empty slices: every kept slice has a sizeable brain area (> 10 % of the square)
        assert float((x > 0.1).float().mean((1, 2, 3)).min()) > 0.10
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert np.abs(z[a][:, None] - z[b][None, :]).min() >= 5  # gap of 4 dropped slices
    split = mri_slice_split(np.arange(113))
    # 113 = 7 blocks of 16 + 1 slice; the first 4 of each block are dropped (and the lone last one)
    assert sum(len(v) for v in split.values()) == 7 * 12
    assert [len(split[s]) for s in ("train", "val", "test")] == [60, 12, 12]


# -- patches -----------------------------------------------------------------------------
def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(1, 20, 30, generator=g), torch.rand(1, 40, 24, generator=g)]


def test_random_patches_deterministic_and_correct():
    ims = _images()
    a = random_patches(ims, 8, 50, torch.Generator().manual_seed(5))
    b = random_patches(ims, 8, 50, torch.Generator().manual_seed(5))
    c = random_patches(ims, 8, 50, torch.Generator().manual_seed(6))
    assert a.shape == (50, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    pos = random_positions(ims, 8, 50, torch.Generator().manual_seed(5))
    for p, (i, t, l) in zip(a, pos.tolist(), strict=True):
        assert torch.equal(p, ims[i][:, t:t + 8, l:l + 8])
    with pytest.raises(ValueError, match="larger than image"):
        random_patches(ims, 25, 3)


def test_random_patches_uniform_over_positions():
    # image 0 has 13*23 = 299 positions, image 1 has 33*17 = 561: P(image 0) = 299/860.
    ims = _images()
    n = 4000
    pos = random_positions(ims, 8, n, torch.Generator().manual_seed(1))
    p0 = 299 / 860
    k = int((pos[:, 0] == 0).sum())
    sd = (n * p0 * (1 - p0)) ** 0.5  # binomial standard deviation ~ 30
    assert abs(k - n * p0) < 4 * sd
    assert int(pos[:, 1].max()) <= 32 and int(pos[:, 2].max()) <= 22 and int(pos.min()) >= 0


def test_grid_patches_match_unfold():
    im = _images()[0]
    p = grid_patches(im, 8, 5)
    ref = im[0].unfold(0, 8, 5).unfold(1, 8, 5).reshape(-1, 1, 8, 8)
    assert torch.equal(p, ref)


def test_patch_dataset_modes():
    ims = _images()
    ds = PatchDataset(ims, 8, stride=4)
    grid = torch.cat([grid_patches(im, 8, 4) for im in ims])
    assert len(ds) == len(grid) and torch.equal(ds.tensor(), grid) and torch.equal(ds[3], grid[3])
    r1, r2 = PatchDataset(ims, 8, n_patches=30, seed=3), PatchDataset(ims, 8, n_patches=30, seed=3)
    assert torch.equal(r1.tensor(), r2.tensor())
    assert torch.equal(r1.tensor(), random_patches(ims, 8, 30, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="exactly one"):
        PatchDataset(ims, 8)
    with pytest.raises(ValueError, match="exactly one"):
        PatchDataset(ims, 8, n_patches=3, stride=2)


# -- measurements ----------------------------------------------------------------------
class RandomMask(LinearPhysics):
    """Test-only random operator: y = m * x with a per-sample Bernoulli(1/2) mask m (B, 1, H, W)."""

    param_names = ("mask",)

    def __init__(self, size, noise=None):
        super().__init__(noise)
        self.size = size
        self._set_param("mask", torch.ones(1, 1, *size))

    def sample_params(self, batch_size, generator=None, device=None):
        return {"mask": (rng.rand((batch_size, 1, *self.size), generator=generator, device=device) < 0.5).float()}

    def A(self, x):
        return x * self.mask

    def A_adjoint(self, y):
        return y * self.mask


def _clean(n=6, size=16):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0))


def test_denoising_dataset_statistics_and_no_ground_truth():
    x = _clean(8, 32)
    sigma = 0.1
    ds = MeasurementDataset(x, Denoising(GaussianNoise(sigma)), seed=1)
    assert len(ds) == 8 and set(ds[0]) == {"y", "params"} and ds[0]["params"] == {}
    assert not ds.has_ground_truth
    r = torch.stack([ds[i]["y"] for i in range(8)]) - x
    # 8192 residuals: the sample std has standard error sigma / sqrt(2 * 8192) ~ 8e-4; allow 5 SE
    assert abs(float(r.std()) - sigma) < 5 * sigma / (2 * r.numel()) ** 0.5
    again = MeasurementDataset(x, Denoising(GaussianNoise(sigma)), seed=1)
    other = MeasurementDataset(x, Denoising(GaussianNoise(sigma)), seed=2)
    assert all(torch.equal(ds[i]["y"], again[i]["y"]) for i in range(8))
    assert not torch.equal(ds[0]["y"], other[0]["y"])


def test_pairs_and_ground_truth():
    x = _clean(8, 32)
    sigma = 0.2
    ds = MeasurementDataset(x, Denoising(GaussianNoise(sigma)), seed=0, keep_ground_truth=True, pairs=True)
    item = ds[2]
    assert set(item) == {"y", "params", "x", "y2"} and torch.equal(item["x"], x[2])
    d = torch.stack([ds[i]["y"] - ds[i]["y2"] for i in range(8)])
    # independent copies: var(y - y2) = 2 sigma^2; std of 8192 samples has relative SE 1/sqrt(2*8192) ~ 0.8 %
    assert abs(float(d.std()) / (2 ** 0.5 * sigma) - 1) < 0.04


def test_random_physics_per_sample_params_and_collate():
    x = _clean(6, 16)
    phys = RandomMask((16, 16))
    ds = MeasurementDataset(x, phys, seed=3, keep_ground_truth=True)
    masks = [ds[i]["params"]["mask"] for i in range(6)]
    assert masks[0].shape == (1, 16, 16)
    assert not torch.equal(masks[0], masks[1])  # a fresh mask per sample
    for i in range(6):
        assert torch.equal(ds[i]["y"], masks[i] * x[i])
    batch = collate_measurements([ds[i] for i in (4, 1, 2)])
    assert batch["params"]["mask"].shape == (3, 1, 16, 16) and batch["x"].shape == (3, 1, 16, 16)
    op = phys.with_params(**batch["params"])
    assert torch.equal(op.A(batch["x"]), batch["y"])
    loader = DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate_measurements)
    b0 = next(iter(loader))
    assert torch.equal(phys.with_params(**b0["params"]).A(x[:4]), b0["y"])


def test_collate_errors():
    ds = MeasurementDataset(_clean(2), Denoising(), keep_ground_truth=True)
    other = MeasurementDataset(_clean(2), Denoising())
    with pytest.raises(ValueError, match="'x'"):
        collate_measurements([ds[0], other[0]])
    with pytest.raises(ValueError, match="parameters"):
        collate_measurements([ds[0], MeasurementDataset(_clean(1), RandomMask((16, 16)))[0]])


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
@pytest.mark.parametrize("keep", [False, True])
def test_save_load_round_trip(tmp_path, suffix, keep):
    if suffix == ".h5":
        import h5py  # noqa: F401
    x = _clean(5, 16)
    ds = MeasurementDataset(x, RandomMask((16, 16), GaussianNoise(0.05)), seed=7,
                            keep_ground_truth=keep, pairs=True, metadata={"note": "unit test"})
    path = ds.save(tmp_path / f"m{suffix}")
    assert path.exists() and path.suffix == suffix
    back = MeasurementDataset.load(path)
    assert len(back) == 5 and back.has_ground_truth == keep
    for i in range(5):
        a, b = ds[i], back[i]
        assert set(a) == set(b)
        for k in set(a) - {"params"}:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k])
        assert torch.equal(a["params"]["mask"], b["params"]["mask"])
    assert back.metadata["seed"] == 7 and back.metadata["physics"] == "RandomMask"
    assert back.metadata["noise_params"]["sigma"] == pytest.approx(0.05)
    assert back.metadata["note"] == "unit test"
    # x is on disk only when asked for
    if suffix == ".npz":
        keys = set(np.load(path, allow_pickle=False).files)
    else:
        import h5py
        with h5py.File(path) as f:
            keys = set(f.keys())
    assert ("x" in keys) == keep and "y" in keys and "y2" in keys


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_save_load_images_of_different_sizes(tmp_path, suffix):
    if suffix == ".h5":
        import h5py  # noqa: F401
    g = torch.Generator().manual_seed(0)
    ims = [torch.rand(1, 12, 16, generator=g), torch.rand(1, 20, 8, generator=g)]
    ds = MeasurementDataset(ims, Denoising(GaussianNoise(0.1)), seed=0)
    back = MeasurementDataset.load(ds.save(tmp_path / f"r{suffix}"))
    assert [tuple(back[i]["y"].shape) for i in range(2)] == [(1, 12, 16), (1, 20, 8)]
    assert all(torch.equal(ds[i]["y"], back[i]["y"]) for i in range(2))


def test_load_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, y=np.array([object()], dtype=object), metadata=np.array(json.dumps({"n_items": 1})))
    with pytest.raises(ValueError):  # numpy refuses object arrays with allow_pickle=False
        MeasurementDataset.load(path)
    with pytest.raises(ValueError, match=".npz, .h5"):
        MeasurementDataset(_clean(1), Denoising()).save(tmp_path / "m.pt")


def test_from_tensors_shared_params():
    y = _clean(3)
    mask = torch.ones(1, 1, 16, 16)
    ds = MeasurementDataset.from_tensors(y, params={"mask": mask})
    assert len(ds) == 3 and ds[2]["params"]["mask"].shape == (1, 16, 16) and "x" not in ds[0]
    batch = collate_measurements([ds[i] for i in range(3)])
    assert batch["params"]["mask"].shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="leading dimension"):
        MeasurementDataset.from_tensors(y, params={"mask": torch.ones(2, 1, 16, 16)})
    with pytest.raises(ValueError, match="items"):
        MeasurementDataset.from_tensors(y, x=y[:2])


def test_with_inpainting_if_available():
    import selfinv.physics.inpainting as inpainting
    x = _clean(4, 16)
    phys = inpainting.Inpainting((1, 16, 16), keep_ratio=0.5)
    ds = MeasurementDataset(x, phys, seed=0, keep_ground_truth=True)
    batch = collate_measurements([ds[i] for i in range(4)])
    assert not torch.equal(batch["params"]["mask"][0], batch["params"]["mask"][1])
    assert torch.equal(phys.with_params(**batch["params"]).A(batch["x"]), batch["y"])


def test_with_mri_if_available(tmp_path):
    import selfinv.physics.mri as mri
    mag = _clean(3, 16)
    x = torch.cat([mag, torch.zeros_like(mag)], 1)  # magnitude images as 2-channel (real, imag): simulated k-space
    phys = mri.MRI((16, 16), acceleration=4, center_fraction=0.125)
    ds = MeasurementDataset(x, phys, seed=0, keep_ground_truth=True)
    batch = collate_measurements([ds[i] for i in range(3)])
    assert batch["y"].shape == (3, 2, 16, 16) and batch["params"]["mask"].shape[0] == 3
    assert not torch.equal(batch["params"]["mask"][0], batch["params"]["mask"][1])
    assert torch.allclose(phys.with_params(**batch["params"]).A(batch["x"]), batch["y"], atol=1e-6)
    back = MeasurementDataset.load(ds.save(tmp_path / "mri.npz"))
    assert torch.equal(collate_measurements([back[i] for i in range(3)])["params"]["mask"], batch["params"]["mask"])
