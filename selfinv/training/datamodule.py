"""Measurement data for the Lightning engine: simulated or read, split by measurement.

Items follow the data contract: ``{"y": (C,H,W), "params": {name: tensor}, "x": optional}``;
the default collate stacks them so ``physics.with_params(**batch["params"])`` is the
batch's operator. A fraction of the **measurements** is held out for
self-supervised validation (no ground truth needed).

The training order is drawn by ``EpochSeededSampler`` from ``(seed, epoch)``
only. The data module's ``state_dict`` (saved in every checkpoint) records the
epoch and the number of batches already trained in it, so a run resumed from a
mid-epoch checkpoint (a ``max_steps`` or ``max_time`` stop) skips exactly those
batches and continues with the next one: resume is exact at any step.
Under DDP the sampler shards that order across ranks itself (Lightning's sampler
replacement is switched off in ``engine.build_trainer``); the validation set is
evaluated whole on every rank (identical values, averaged by ``sync_dist``).
"""

from __future__ import annotations

import math
from typing import Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from selfinv.data.measurements import collate_measurements


def _world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSeededSampler(Sampler[int]):
    """A random permutation drawn from ``(seed, epoch)`` alone (``set_epoch`` is called by Lightning).

    Distributed (world size ``W > 1``, read from ``torch.distributed`` unless ``rank`` /
    ``world_size`` are given): every rank draws the **same** permutation, pads it by wrapping
    around to a multiple of ``W`` (``DistributedSampler`` semantics) and takes every ``W``-th index
    from position ``rank``. So the ``k``-th batches of size ``b`` of the ``W`` ranks together hold
    exactly the indices of the ``k``-th batch of size ``W b`` of a single process (when ``n`` is a
    multiple of ``W``), which makes DDP's averaged gradient the big-batch gradient.
    """

    def __init__(self, n: int, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 fresh_each_epoch: bool = False):
        self.n, self.seed, self.epoch = n, seed, 0
        self._rank, self._world = rank, world_size
        self._resume: tuple[int, int] | None = None
        #: yield ``i + epoch * n``: a data set of random items (``RandomPatches``) then draws new ones per epoch
        self.fresh_each_epoch = fresh_each_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, items_done: int) -> None:
        """The next pass over ``epoch`` skips its first ``items_done`` indices (of this rank's shard)."""
        self._resume = (int(epoch), int(items_done))

    def _shard(self) -> tuple[int, int]:
        rank, world = _world()
        rank = rank if self._rank is None else self._rank
        world = world if self._world is None else self._world
        if not 0 <= rank < world:
            raise ValueError(f"EpochSeededSampler: rank must be in [0, {world}), got {rank}")
        return rank, world

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(self.epoch))
        order = torch.randperm(self.n, generator=g).tolist()
        rank, world = self._shard()
        if world > 1:
            total = math.ceil(self.n / world) * world
            order = (order * math.ceil(total / self.n))[:total][rank::world]
        if self._resume is not None:
            if self._resume[0] == self.epoch:
                order = order[self._resume[1]:]
            self._resume = None
        if self.fresh_each_epoch:
            order = [i + self.epoch * self.n for i in order]
        return iter(order)

    def __len__(self) -> int:
        _, world = self._shard()
        return math.ceil(self.n / world)


class ShapeBatches(Sampler[list[int]]):
    """Batches of items of equal shape (measurements of different sizes cannot be stacked).

    Every epoch the items of each shape are shuffled and cut into batches, and the batches of all
    shapes are shuffled together, from ``(seed, epoch)`` alone; ``shuffle=False`` keeps the order
    (validation). Epoch, resume position (in batches) and the DDP shard are those of ``self.sampler``,
    where Lightning finds ``set_epoch``.
    """

    def __init__(self, shapes: list[tuple[int, ...]], batch_size: int, seed: int = 0, shuffle: bool = True):
        self.groups: dict[tuple[int, ...], list[int]] = {}
        for i, s in enumerate(shapes):
            self.groups.setdefault(tuple(s), []).append(i)
        self.batch_size, self.seed, self.shuffle = int(batch_size), int(seed), shuffle
        n_batches = sum(math.ceil(len(v) / self.batch_size) for v in self.groups.values())
        self.sampler = EpochSeededSampler(n_batches, seed)

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.sampler.epoch))
        out = []
        for shape in sorted(self.groups):
            idx = self.groups[shape]
            if self.shuffle:
                idx = [idx[k] for k in torch.randperm(len(idx), generator=g).tolist()]
            out.extend(idx[k:k + self.batch_size] for k in range(0, len(idx), self.batch_size))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        if not self.shuffle:
            return iter(batches)
        return iter(batches[k] for k in self.sampler)  # the sampler's order, shard and resume position

    def __len__(self) -> int:
        return len(self.sampler) if self.shuffle else self.sampler.n


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


class _PositionedLoader(DataLoader):
    """A ``DataLoader`` whose resume position is restored by ``MeasurementDataModule`` (through its
    sampler): declares itself resumable to Lightning, with no state of its own."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        return None


def _shapes(ds: Dataset) -> list[tuple[int, ...]] | None:
    """Item shapes when a data set declares them and they differ (then batches are formed by shape)."""
    shapes = getattr(ds, "shapes", None)
    return list(shapes) if shapes is not None and len(set(shapes)) > 1 else None


class MeasurementDataModule(pl.LightningDataModule):
    """Train / self-supervised-validation loaders over measurement data sets (``val`` may be None:
    no validation)."""

    def __init__(self, train: Dataset, val: Dataset | None, batch_size: int = 8, num_workers: int = 0,
                 seed: int = 0):
        super().__init__()
        if len(train) == 0 or (val is not None and len(val) == 0):
            raise ValueError(f"need non-empty train and val sets, got {len(train)} and "
                             f"{0 if val is None else len(val)}")
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self._resume: dict | None = None
        self._sampler: EpochSeededSampler | None = None

    def train_dataloader(self) -> DataLoader:
        shapes = _shapes(self.train_set)
        common = dict(num_workers=self.num_workers, collate_fn=collate_measurements,
                      persistent_workers=self.num_workers > 0, generator=torch.Generator().manual_seed(self.seed))
        if shapes is not None:
            batches = ShapeBatches(shapes, self.batch_size, self.seed)
            self._sampler = batches.sampler
            self._restore(batches.sampler, per_batch=1)
            return _PositionedLoader(self.train_set, batch_sampler=batches, **common)
        sampler = self._sampler = EpochSeededSampler(len(self.train_set), self.seed,
                                                     fresh_each_epoch=getattr(self.train_set, "fresh_each_epoch",
                                                                              False))
        self._restore(sampler, per_batch=self.batch_size)
        return _PositionedLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, **common)

    def _restore(self, sampler: EpochSeededSampler, per_batch: int) -> None:
        if self._resume is not None:
            sampler.resume_at(self._resume["epoch"], self._resume["batches_done"] * per_batch)
            self._resume = None

    def state_dict(self) -> dict:
        """Position in the training data: the epoch and the batches of it already trained."""
        trainer = self.trainer
        if trainer is None or self._sampler is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        return {"epoch": int(self._sampler.epoch), "batches_done": int(done)}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume = dict(state_dict) if state_dict else None

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        shapes = _shapes(self.val_set)
        common = dict(num_workers=self.num_workers, collate_fn=collate_measurements,
                      persistent_workers=self.num_workers > 0)
        if shapes is not None:
            return DataLoader(self.val_set, batch_sampler=ShapeBatches(shapes, self.batch_size, shuffle=False),
                              **common)
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, **common)

    @property
    def has_ground_truth(self) -> bool:
        return self.val_set is not None and has_ground_truth(self.val_set)
