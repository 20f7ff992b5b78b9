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


def clean_stale_files(checkpoint_dir: str | os.PathLike, keep_best: str | None = None) -> list[str]:
    """Remove what a killed run leaves in ``checkpoint_dir``: ``atomic_save`` temporaries
    (``.NAME.*.tmp``) and, when ``keep_best`` is given, every ``best-*.ckpt`` but that one (a kill
    between writing a new best and deleting the old leaves two). Returns the removed paths."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        stale_tmp = p.name.startswith(".") and p.name.endswith(".tmp")
        stale_best = (keep_best is not None and p.name.startswith("best-") and p.suffix == ".ckpt"
                      and p.resolve() != Path(keep_best).resolve())
        if p.is_file() and (stale_tmp or stale_best):
            p.unlink()
            removed.append(str(p))
    return removed


class CheckpointError(ValueError):
    """A file is not a readable selfinv checkpoint."""


#: the first bytes of files a user may pass as a checkpoint by mistake, and what they are
_NOT_CHECKPOINTS = ((b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"\x89PNG", "a PNG image"),
                    (b"\x89HDF", "an HDF5 file"), (b"\x93NUMPY", "a NumPy array (.npy)"),
                    (b"SIMPLE  =", "a FITS file"), (b"\xff\xd8\xff", "a JPEG image"))


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Refuse, with a one-line ``CheckpointError``, a file that is no PyTorch checkpoint at all (a text file, an
    image, a zip archive without a pickle): ``torch.load`` would report it as a damaged file or as forbidden
    Python objects. A PyTorch file (a zip archive holding ``data.pkl``, or a legacy pickle) passes: what it holds
    is ``read_checkpoint``'s to check. A missing, empty or folder path is left to ``read_checkpoint``."""
    import zipfile

    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return
    with open(p, "rb") as f:
        head = f.read(132)
    expected = "expected a .ckpt written by 'selfinv fit'"
    if head.startswith(b"PK\x03\x04"):  # a zip archive: torch.save's format, or another archive (.npz, .docx)
        try:
            with zipfile.ZipFile(p) as z:
                if any(n.endswith("data.pkl") for n in z.namelist()):
                    return
        except zipfile.BadZipFile:
            return  # a truncated or damaged archive: read_checkpoint says so
        what = "a NumPy .npz archive" if p.suffix.lower() == ".npz" else "a zip archive without torch.save's data.pkl"
        raise CheckpointError(f"{p} is not a PyTorch checkpoint ({what}); {expected}")
    if head[:1] == b"\x80":  # a pickle (protocol 2+): torch.save's legacy format
        return
    what = next((name for magic, name in _NOT_CHECKPOINTS if head.startswith(magic)), None)
    if what is None and head[128:132] == b"DICM":
        what = "a DICOM file"
    if what is None:
        text = all(b >= 32 or b in b"\t\n\r" for b in head)  # no NUL or other control bytes
        what = "a text file" if text else "neither a zip archive nor a pickle"
    raise CheckpointError(f"{p} is not a PyTorch checkpoint ({what}); {expected}")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """``load_checkpoint`` with one-line errors for the files a user may point at by mistake
    (missing, empty, truncated, not a checkpoint, not written by selfinv)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder; expected a .ckpt file written by 'selfinv fit' "
                              f"(e.g. {p / 'checkpoints' / 'last.ckpt'})")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes): not a checkpoint")
    check_checkpoint_file(p)
    try:
        ckpt = load_checkpoint(p, map_location=map_location)
    except Exception as e:  # noqa: BLE001 - torch raises several types for damaged files
        text = str(e).split("\n")[0]
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            why = "it holds Python objects that selfinv refuses to unpickle (not a selfinv checkpoint)"
        elif isinstance(e, (EOFError, OSError, RuntimeError)) or "zip" in text.lower():
            why = f"it is truncated or damaged ({type(e).__name__}: {text[:120]})"
        else:
            why = f"{type(e).__name__}: {text[:160]}"
        raise CheckpointError(f"cannot read checkpoint {p}: {why}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{p} is not a selfinv checkpoint: it lacks 'state_dict' and the run config "
                              f"(hyper_parameters); a bare state dict or tensor cannot say which network and physics "
                              f"it belongs to. Expected a .ckpt written by 'selfinv fit'")
    config = ckpt.get("hyper_parameters", {}).get("config") if isinstance(ckpt.get("hyper_parameters"), dict) \
        else None
    if not isinstance(config, dict):
        raise CheckpointError(f"{p} holds weights but no selfinv run config (hyper_parameters.config); it was "
                              f"not written by 'selfinv fit'")
    return ckpt
