"""Data sets of stored measurements ``y`` with their per-sample operator parameters.

``MeasurementDataset(images, physics, seed)`` simulates, for every clean image
``x_i`` in order,

1. the operator parameters ``p_i = physics.sample_params(1, g)`` when the physics
   draws any (a fresh mask, kernel... per sample), else ``physics.params()``;
2. ``y_i = physics.with_params(**p_i)(x_i, g)``, i.e. ``noise(A_{p_i} x_i)``;
3. if ``pairs``: ``y2_i``, a second, independent noisy copy with the same operator
   (``noise(A_{p_i} x_i)`` again), for Noise2Noise,

with one generator ``g = torch.Generator(device of x).manual_seed(seed)``, so
the data set is a deterministic function of ``(images, physics, seed)``.

Items are dicts ``{"y": (C', H', W'), "params": {name: tensor without the batch
dimension}, "x": (C, H, W) (only if keep_ground_truth), "y2": (only if pairs)}``;
``collate_measurements`` stacks items so that
``physics.with_params(**batch["params"])`` is the operator of the batch.
Training reads ``y`` and ``params`` only; ``x`` is kept for evaluation alone.

``save``/``load`` use ``.npz`` (numpy, loaded with ``allow_pickle=False``) or
HDF5 (``.h5``/``.hdf5``, h5py). Keys: ``y``, ``y2``, ``x``, ``params/<name>``
(stacked ``(N, ...)`` arrays when all items have the same shape, else one array
per item under ``<key>@<index>``) and ``metadata`` (a JSON string: physics
name and repr, noise name and parameters, seed, format version). Loading never
executes code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfinv.physics.base import Physics

FORMAT_VERSION = "1"
_ITEM_SEP = "@"


def physics_description(physics: Physics) -> dict[str, Any]:
    """A JSON-able description of a physics (for the record; not used to rebuild it)."""
    noise = physics.noise
    noise_params = {}
    for name in ("sigma", "gain", "shape"):
        v = getattr(noise, name, None)
        if isinstance(v, Tensor):
            noise_params[name] = v.detach().cpu().tolist()
    return {"physics": type(physics).__name__, "physics_repr": repr(physics),
            "noise": type(noise).__name__, "noise_params": noise_params,
            "param_names": list(physics.param_names)}


def _strip_batch(params: Mapping[str, Tensor], index: int, n_items: int, who: str) -> dict[str, Tensor]:
    out = {}
    for name, v in params.items():
        if v.ndim == 0:
            raise ValueError(f"{who}: parameter '{name}' must have a leading batch dimension, got a scalar")
        if v.shape[0] == 1:
            out[name] = v[0]
        elif v.shape[0] == n_items:
            out[name] = v[index]
        else:
            raise ValueError(f"{who}: parameter '{name}' has leading dimension {v.shape[0]}; "
                             f"expected 1 (shared) or {n_items} (one per image)")
    return out


class MeasurementDataset(Dataset):
    """Simulated measurements of clean images through ``physics`` (see the module doc).

    Args:
        images: ``(N, C, H, W)`` tensor or a list of ``(C, H, W)`` tensors.
        physics: the measurement process; its current parameters are used when
            ``sample_params`` draws nothing.
        seed: seed of the single generator used for all draws.
        keep_ground_truth: store ``x`` in the items (evaluation only).
        pairs: also store ``y2``, an independent noisy copy with the same operator.
        metadata: extra JSON-able entries recorded with the data set.
    """

    def __init__(self, images: Tensor | Sequence[Tensor], physics: Physics, seed: int = 0, *,
                 keep_ground_truth: bool = False, pairs: bool = False,
                 metadata: Mapping[str, Any] | None = None):
        super().__init__()
        xs = list(images.unbind(0)) if isinstance(images, Tensor) and images.ndim == 4 else list(images)
        if not xs:
            raise ValueError("MeasurementDataset got no images")
        for i, x in enumerate(xs):
            if not isinstance(x, Tensor) or x.ndim != 3 or not x.is_floating_point():
                desc = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"MeasurementDataset expects floating (C, H, W) images; image {i} is {desc}")
        g = torch.Generator(device=xs[0].device).manual_seed(int(seed))
        fixed = physics.params()
        self.y: list[Tensor] = []
        self.params: list[dict[str, Tensor]] = []
        self.x: list[Tensor] | None = [] if keep_ground_truth else None
        self.y2: list[Tensor] | None = [] if pairs else None
        with torch.no_grad():
            for i, x in enumerate(xs):
                p = physics.sample_params(1, g, x.device) if physics.is_random else {}
                p = dict(p) if p else _batch_of_fixed(fixed, i, len(xs))
                op = physics.with_params(**p) if p else physics
                xb = x[None]
                self.y.append(op(xb, g)[0])
                if self.y2 is not None:
                    self.y2.append(op(xb, g)[0])
                if self.x is not None:
                    self.x.append(x.detach().clone())
                self.params.append({k: v[0] for k, v in p.items()})
        self.metadata: dict[str, Any] = {"format_version": FORMAT_VERSION, "seed": int(seed),
                                         **physics_description(physics),
                                         "keep_ground_truth": bool(keep_ground_truth),
                                         "pairs": bool(pairs), **dict(metadata or {})}

    # -- construction from memory / disk ---------------------------------------------
    @classmethod
    def from_tensors(cls, y: Tensor | Sequence[Tensor], params: Mapping[str, Tensor] | None = None,
                     x: Tensor | Sequence[Tensor] | None = None, y2: Tensor | Sequence[Tensor] | None = None,
                     metadata: Mapping[str, Any] | None = None) -> "MeasurementDataset":
        """Wrap measurements already in memory.

        ``y``: ``(N, C, H, W)`` (or a list of ``(C, H, W)``); ``params``: ``{name:
        (N or 1, ...)}`` (leading dimension 1 = shared by all items); ``x``/``y2``
        optional, same length as ``y``.
        """
        ys = list(y.unbind(0)) if isinstance(y, Tensor) else list(y)
        n = len(ys)
        self = cls.__new__(cls)
        Dataset.__init__(self)
        self.y = ys
        params = dict(params or {})
        self.params = [_strip_batch(params, i, n, "from_tensors") for i in range(n)]
        for name, v in (("x", x), ("y2", y2)):
            if v is None:
                setattr(self, name, None)
                continue
            vs = list(v.unbind(0)) if isinstance(v, Tensor) else list(v)
            if len(vs) != n:
                raise ValueError(f"from_tensors: '{name}' has {len(vs)} items but y has {n}")
            setattr(self, name, vs)
        self.metadata = {"format_version": FORMAT_VERSION, "source": "from_tensors", **dict(metadata or {})}
        return self

    # -- Dataset -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"y": self.y[index], "params": dict(self.params[index])}
        if self.x is not None:
            item["x"] = self.x[index]
        if self.y2 is not None:
            item["y2"] = self.y2[index]
        return item

    @property
    def has_ground_truth(self) -> bool:
        return self.x is not None

    def __repr__(self) -> str:
        shapes = sorted({tuple(v.shape) for v in self.y})
        return (f"{type(self).__name__}(n={len(self)}, y={shapes if len(shapes) > 1 else shapes[0]}, "
                f"params={sorted(self.params[0]) if self.params else []}, "
                f"ground_truth={self.x is not None}, pairs={self.y2 is not None}, "
                f"physics={self.metadata.get('physics')})")

    # -- storage -----------------------------------------------------------------------
    def _arrays(self) -> dict[str, list[np.ndarray]]:
        arrays: dict[str, list[np.ndarray]] = {"y": [t.detach().cpu().numpy() for t in self.y]}
        for name in ("x", "y2"):
            vs = getattr(self, name)
            if vs is not None:
                arrays[name] = [t.detach().cpu().numpy() for t in vs]
        names = sorted(self.params[0]) if self.params else []
        for i, p in enumerate(self.params):
            if sorted(p) != names:
                raise ValueError(f"item {i} has parameters {sorted(p)} but item 0 has {names}")
        for name in names:
            arrays[f"params/{name}"] = [p[name].detach().cpu().numpy() for p in self.params]
        return arrays

    def _flat_arrays(self) -> dict[str, np.ndarray]:
        flat = {}
        for key, items in self._arrays().items():
            if len({(a.shape, a.dtype) for a in items}) == 1:
                flat[key] = np.stack(items)
            else:
                for i, a in enumerate(items):
                    flat[f"{key}{_ITEM_SEP}{i}"] = a
        return flat

    def save(self, path: str | Path) -> Path:
        """Write to ``.npz`` or ``.h5``/``.hdf5`` (chosen by the extension). Returns the path."""
        path = Path(path)
        flat = self._flat_arrays()
        meta = json.dumps({**self.metadata, "n_items": len(self)})
        suffix = path.suffix.lower()
        if suffix not in (".npz", ".h5", ".hdf5"):
            raise ValueError(f"cannot save measurements to '{path.name}': expected a .npz, .h5 or .hdf5 file")
        if path.is_dir():
            raise ValueError(f"cannot save measurements to {path}: it is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:  # written whole or not at all: a full disk or a kill leaves no half file
            if suffix == ".npz":
                with open(tmp, "wb") as f:  # a file object: numpy would otherwise append ".npz"
                    np.savez(f, metadata=np.array(meta), **flat)
            else:
                h5py = _import_h5py()
                with h5py.File(tmp, "w") as f:
                    f.attrs["metadata"] = meta
                    for key, a in flat.items():
                        f.create_dataset(key, data=a)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MeasurementDataset":
        """Read a file written by ``save`` (``.npz`` or HDF5). Never unpickles."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                flat = {k: z[k] for k in z.files}
            meta = json.loads(str(flat.pop("metadata"))) if "metadata" in flat else {}
        elif suffix in (".h5", ".hdf5"):
            h5py = _import_h5py()
            flat = {}
            with h5py.File(path, "r") as f:
                meta = json.loads(f.attrs["metadata"]) if "metadata" in f.attrs else {}
                f.visititems(lambda k, obj: flat.__setitem__(k, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        else:
            raise ValueError(f"cannot load measurements from '{path.name}': expected a .npz, .h5 or .hdf5 file")
        if "y" not in flat and not any(k.startswith("y" + _ITEM_SEP) for k in flat):
            raise ValueError(f"{path} has no 'y' measurements; keys found: {sorted(flat)}")
        n = int(meta.pop("n_items")) if "n_items" in meta else len(flat["y"])
        items = _unflatten(flat, n, path)
        params = {k.split("/", 1)[1]: v for k, v in items.items() if k.startswith("params/")}
        ds = cls.from_tensors(items["y"], x=items.get("x"), y2=items.get("y2"), metadata=meta)
        ds.params = [{k: v[i] for k, v in params.items()} for i in range(n)]
        ds.metadata = meta
        return ds


def _unflatten(flat: dict[str, np.ndarray], n: int, path: Path) -> dict[str, list[Tensor]]:
    items: dict[str, list[Tensor | None]] = {}
    for key, a in flat.items():
        if _ITEM_SEP in key:
            base, idx = key.rsplit(_ITEM_SEP, 1)
            items.setdefault(base, [None] * n)[int(idx)] = torch.from_numpy(np.array(a))
        else:
            if len(a) != n:
                raise ValueError(f"{path}: '{key}' has {len(a)} items, metadata says {n}")
            items[key] = list(torch.from_numpy(np.array(a)).unbind(0))
    for key, vs in items.items():
        if any(v is None for v in vs):
            raise ValueError(f"{path}: '{key}' is missing some items")
    return items  # type: ignore[return-value]


def _batch_of_fixed(fixed: Mapping[str, Tensor], index: int, n: int) -> dict[str, Tensor]:
    """The fixed parameters of item ``index`` with a leading dimension 1."""
    return {k: v[None] for k, v in _strip_batch(fixed, index, n, "MeasurementDataset").items()}


def collate_measurements(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch: ``y`` ``(B, C, H, W)``, ``params`` ``{name: (B, ...)}``,
    plus ``x``/``y2`` when every item has them (an error if only some do)."""
    if not items:
        raise ValueError("collate_measurements got an empty list")
    batch: dict[str, Any] = {"y": torch.stack([it["y"] for it in items])}
    names = sorted(items[0].get("params", {}))
    for i, it in enumerate(items):
        if sorted(it.get("params", {})) != names:
            raise ValueError(f"item {i} has parameters {sorted(it.get('params', {}))}, item 0 has {names}")
    batch["params"] = {n: torch.stack([it["params"][n] for it in items]) for n in names}
    for key in ("x", "y2"):
        have = [key in it for it in items]
        if all(have):
            batch[key] = torch.stack([it[key] for it in items])
        elif any(have):
            raise ValueError(f"only {sum(have)} of {len(items)} items have '{key}'")
    return batch


def _import_h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("HDF5 files need h5py: pip install selfinv[formats] (or pip install h5py)") from e
    return h5py
