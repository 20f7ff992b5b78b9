"""Atomic checkpoints, loaded with ``torch.load(weights_only=True)``.

A checkpoint is written to a temporary file in the destination folder, flushed
and ``fsync``-ed, then moved over the destination with ``os.replace`` (atomic on
POSIX): a run killed at any instant leaves either the previous or the new
checkpoint, never a truncated one. Loading never unpickles arbitrary objects:
checkpoints hold tensors and plain Python types only (the run config is a plain
dict).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically (tmp file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a selfinv checkpoint safely (``weights_only=True``)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


class AtomicCheckpointIO(CheckpointIO):
    """Lightning checkpoint plugin: atomic writes, ``weights_only=True`` reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location if map_location is not None else "cpu")

    def remove_checkpoint(self, path: str | os.PathLike) -> None:
        if os.path.exists(path):
            os.remove(path)
