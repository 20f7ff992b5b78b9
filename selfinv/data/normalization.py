"""Units: the normalisation a run computes from its training measurements, and undoes on output.

Networks and the losses' step sizes (SURE's ``tau``, UNSURE's ascent step,
learning rates) assume data of order one. A user's measurements come in their
own units (uint16 counts, Hounsfield units, k-space of arbitrary scale), so a run
maps them to ``y' = (y - offset) / scale`` before training, stores the two numbers
in its checkpoint, applies them identically in ``predict``, ``finetune`` and
validation, and returns reconstructions as ``x = x' * scale + offset`` in the
input's units (and dtype range).

How ``offset`` and ``scale`` are chosen (``fit_normalization``), robustly, from
percentiles of (a bounded random sample of) the training data:

* **affine** — ``offset = q(0.5 %)``, ``scale = q(99.5 %) - q(0.5 %)``: only where an
  offset leaves the model ``y = A x + n`` intact, i.e. image-domain operators whose
  rows sum to one (denoising, blur, downsampling) with additive noise (Gaussian,
  coloured, unknown);
* **scale** — ``offset = 0``, ``scale = q(99.5 %)`` of ``|A† y|`` (of ``|y|`` for image-domain
  operators): everywhere else. Photon-counting noise (Poisson, Poisson–Gaussian,
  Gamma) stays in its family only under a pure scale (``y/s`` is Poisson with gain
  ``γ/s``), and a sinogram or k-space has no meaningful offset. Using ``A† y``
  puts the *images* (not the measurements) at order one.

Noise levels are given and reported in the user's units; the training physics
uses the noise model scaled by ``1 / scale`` (``NoiseModel.scaled``).

Example::

    >>> import torch
    >>> n = Normalization(offset=100.0, scale=1000.0)
    >>> n.undo(n.apply(torch.tensor([600.0])))
    tensor([600.])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal

import numpy as np
import torch
from torch import Tensor

Mode = Literal["auto", "scale", "none"]
#: percentiles of the robust range
LOW, HIGH = 0.005, 0.995
#: at most this many values enter the percentile estimates (a random sample of them)
MAX_SAMPLES = 2_000_000


@dataclass(frozen=True)
class Normalization:
    """``y' = (y - offset) / scale``; ``kind`` records how the numbers were chosen."""

    offset: float = 0.0
    scale: float = 1.0
    kind: str = "none"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.offset) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"normalisation needs a finite offset and a finite scale > 0, got offset "
                             f"{self.offset}, scale {self.scale} (constant or empty data?)")

    @property
    def is_identity(self) -> bool:
        return self.offset == 0.0 and self.scale == 1.0

    def apply(self, y: Tensor) -> Tensor:
        """User units -> training units."""
        return y if self.is_identity else (y - self.offset) / self.scale

    def undo(self, x: Tensor) -> Tensor:
        """Training units -> user units."""
        return x if self.is_identity else x * self.scale + self.offset

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Normalization":
        return cls() if not d else cls(float(d["offset"]), float(d["scale"]), str(d.get("kind", "stored")))


def _sample(values: Iterable[Tensor], generator: torch.Generator) -> Tensor:
    """At most ``MAX_SAMPLES`` values drawn uniformly from all ``values`` (float64, flattened)."""
    parts = [v.detach().reshape(-1).double().cpu() for v in values]
    total = sum(p.numel() for p in parts)
    if total == 0:
        raise ValueError("cannot compute a normalisation from empty data")
    flat = torch.cat(parts)
    if total > MAX_SAMPLES:
        flat = flat[torch.randint(0, total, (MAX_SAMPLES,), generator=generator)]
    return flat


def _quantiles(v: Tensor, qs: tuple[float, ...]) -> list[float]:
    return [float(x) for x in np.quantile(v.numpy(), qs)]


def fit_normalization(values: Iterable[Tensor], affine: bool, mode: Mode = "auto", seed: int = 0,
                      offset: float | None = None) -> Normalization:
    """The normalisation of data whose relevant values (the measurements, or ``|A† y|``) are ``values``.

    ``affine``: whether an offset is allowed (see the module docstring); ``mode``: ``"auto"`` (affine
    when allowed, else scale), ``"scale"`` (never an offset) or ``"none"`` (the identity).
    ``offset``: a known detector offset (``data.offset``, image-domain data only): then
    ``y' = (y - offset) / q(99.5 %)`` of ``|y - offset|`` in every mode but ``"none"``, which
    subtracts it alone.
    """
    if mode not in ("auto", "scale", "none"):
        raise ValueError(f"data.normalize must be 'auto', 'scale' or 'none', got {mode!r}")
    if offset is not None and not math.isfinite(offset):
        raise ValueError(f"data.offset must be a finite number, got {offset}")
    if mode == "none":
        return Normalization() if not offset else Normalization(float(offset), 1.0, "given offset")
    v = _sample([t[~torch.isnan(t)] for t in values], torch.Generator().manual_seed(int(seed)))  # blank: left out
    if not bool(torch.isfinite(v).all()):
        raise ValueError("the training measurements hold infinite values; remove or inpaint them first")
    if offset is not None:
        top = _quantiles((v - offset).abs(), (HIGH,))[0]
        if not top > 0:
            raise ValueError(f"the training measurements all equal data.offset = {offset:g}: nothing to learn from")
        return Normalization(float(offset), top, "given offset")
    if affine and mode == "auto":
        lo, hi = _quantiles(v, (LOW, HIGH))
        if hi > lo:
            return Normalization(lo, hi - lo, "affine")
    top = _quantiles(v.abs(), (HIGH,))[0]
    if not top > 0:
        top = float(v.abs().max())
    if not top > 0:
        raise ValueError("the training measurements are all zero: nothing to normalise or learn from")
    return Normalization(0.0, top, "scale")


def cast_to(x: Tensor, dtype: str) -> np.ndarray:
    """``x`` (user units) as a numpy array of ``dtype``: integers are rounded and clipped to the type's range
    (a reconstruction may overshoot it slightly), floats converted."""
    a = x.detach().cpu().double().numpy()
    dt = np.dtype(dtype)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return np.clip(np.rint(a), info.min, info.max).astype(dt)
    if dt == np.bool_:
        return a > 0.5
    if np.issubdtype(dt, np.floating):
        return a.astype(dt)
    return a.astype(np.float32)
