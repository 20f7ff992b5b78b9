"""Measurement data for the Lightning engine: simulated or read, split by measurement.

Items follow the data contract: ``{"y": (C,H,W), "params": {name: tensor}, "x": optional}``;
the default collate stacks them so ``physics.with_params(**batch["params"])`` is the
batch's operator. A fraction of the **measurements** is held out for
self-supervised validation (no ground truth needed).

The training order is drawn by ``EpochSeededSampler`` from ``(seed, epoch)``
only, so a run resumed at an epoch boundary replays that epoch's batches exactly.
"""

from __future__ import annotations

import math
from typing import Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from selfinv.data.measurements import collate_measurements


class EpochSeededSampler(Sampler[int]):
    """A random permutation drawn from ``(seed, epoch)`` alone (``set_epoch`` is called by Lightning)."""

    def __init__(self, n: int, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def split_measurements(ds: Dataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Hold out ``ceil(val_fraction N)`` measurements (seeded permutation) for self-supervised validation."""
    n = len(ds)
    n_val = max(1, int(math.ceil(val_fraction * n)))
    if n_val >= n:
        raise ValueError(f"data.val_fraction={val_fraction} leaves no training measurement out of {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    return Subset(ds, perm[n_val:].sort().values.tolist()), Subset(ds, perm[:n_val].sort().values.tolist())


def has_ground_truth(ds: Dataset) -> bool:
    """Whether items carry the clean image ``x`` (looks through ``Subset``)."""
    while isinstance(ds, Subset):
        ds = ds.dataset
    return bool(getattr(ds, "has_ground_truth", False))


class MeasurementDataModule(pl.LightningDataModule):
    """Train / self-supervised-validation loaders over measurement data sets."""

    def __init__(self, train: Dataset, val: Dataset, batch_size: int = 8, num_workers: int = 0, seed: int = 0):
        super().__init__()
        if len(train) == 0 or len(val) == 0:
            raise ValueError(f"need non-empty train and val sets, got {len(train)} and {len(val)}")
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size,
                          sampler=EpochSeededSampler(len(self.train_set), self.seed),
                          num_workers=self.num_workers, collate_fn=collate_measurements,
                          persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_measurements,
                          persistent_workers=self.num_workers > 0)

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    @property
    def has_ground_truth(self) -> bool:
        return has_ground_truth(self.val_set)
