"""The strip-integral Radon transform kernel behind ``Tomography``.

A sparse projection matrix (exact pixel footprints), its symmetry-reduced plan,
a small cache of plans, the CPU thread policy of the products and the autograd
functions that make ``A`` and ``A^T`` each other's gradient. The geometry and the
equations are documented in ``selfinv.physics.tomography``.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from selfinv.utils.threads import at_most_threads

__all__ = ["CENTERINGS", "RadonPlan", "backproject", "cpu_threads", "default_detectors", "detector_center",
           "project", "radon_matrix", "radon_matrix_transpose", "radon_plan", "rotation_center"]

#: at most this many cached projection plans (each holds A and A^T as sparse CSR) ...
CACHE_SIZE = 8
#: ... holding at most this many non-zeros in total (about 16 bytes each in float32)
CACHE_MAX_NNZ = 40_000_000
#: threads of a CPU projection / back-projection (None: torch's setting). One by default: on the
#: 2-core reference machine two MKL threads are at best ~1.8x faster, but 4-15x
#: *slower* as soon as another process competes for a core (each product lasts
#: about a millisecond, shorter than a scheduler time slice, so the thread barrier
#: waits for the descheduled thread). Raise it on a dedicated many-core machine.
SPARSE_CPU_THREADS: int | None = 1
#: below this many multiply-adds (nnz x columns) a CPU product always runs on one thread
SINGLE_THREAD_WORK = 500_000
#: where the centre of rotation and the detector's centre sit (see ``rotation_center``)
CENTERINGS = ("skimage", "geometric")
#: weights below this fraction of a pixel's footprint are dropped from the matrix
_PRUNE = 1e-12


# ---------------------------------------------------------------------------------
# The projection matrix
# ---------------------------------------------------------------------------------
def _footprint_cdf(u: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """CDF at ``u`` of the unit-area trapezoid ``box_a * box_b / (a b)`` (boxes centred at 0).

    Piecewise: quadratic ramps on ``|u| in (h2, h1)``, linear ``(u + m/2)/m`` on the
    plateau ``|u| <= h2``, with ``h1 = (a+b)/2``, ``h2 = |a-b|/2``, ``m = max(a, b)``;
    written without cancellation so that ``min(a, b) -> 0`` (0 and 90 degrees) is exact.
    """
    h1 = (a + b) / 2
    h2 = (a - b).abs() / 2
    m = torch.maximum(a, b)
    two_ab = (2 * a * b).clamp_min(1e-300)
    left = (u + h1).clamp_min(0) ** 2 / two_ab
    right = 1 - (h1 - u).clamp_min(0) ** 2 / two_ab
    plateau = (u + m / 2) / m
    return torch.where(u <= -h2, left, torch.where(u >= h2, right, plateau))


def rotation_center(n: int, centering: str = "skimage") -> float:
    """Pixel index (row and column) of the centre of rotation of an ``n x n`` image.

    ``"skimage"``: ``n // 2``, the centre of a pixel (``skimage.transform.radon``);
    ``"geometric"``: ``(n - 1) / 2``, the centre of the square.
    """
    _check_centering(centering)
    return float(n // 2) if centering == "skimage" else (n - 1) / 2


def detector_center(n_detectors: int, centering: str = "skimage") -> float:
    """Detector index of the ray through the centre of rotation (``t = 0``).

    ``"skimage"``: ``D // 2``; ``"geometric"``: ``(D - 1) / 2``.
    """
    _check_centering(centering)
    return float(n_detectors // 2) if centering == "skimage" else (n_detectors - 1) / 2


def default_detectors(n: int, centering: str = "skimage") -> int:
    """The default detector count for ``n x n`` images.

    ``"skimage"``: ``ceil(sqrt(2) n)``, the sinogram height of
    ``skimage.transform.radon(..., circle=False)``. ``"geometric"``: the same,
    plus one when ``D - n`` would be odd, so that pixel centres at 0 and 90
    degrees fall on bin centres rather than on bin edges (which would blur FBP).
    """
    _check_centering(centering)
    d = math.ceil(math.sqrt(2) * n - 1e-9)
    if centering == "geometric" and (d - n) % 2:
        d += 1
    return int(d)


def _check_centering(centering: str) -> None:
    if centering not in CENTERINGS:
        raise ValueError(f"centering must be one of {CENTERINGS}, got {centering!r}")


def radon_matrix_transpose(n: int, angles_deg: Tensor, n_detectors: int, pixel_size: float,
                           dtype: torch.dtype, device: torch.device, center: float | None = None,
                           det_center: float | None = None, chunk: int = 8) -> Tensor:
    """``A^T`` as a sparse CSR matrix of shape ``(n*n, n_views*n_detectors)``.

    Row ``p = j*n + i`` (pixel of row ``j``, column ``i``), column ``v*D + k``
    (view, detector bin). Pixel ``(j, i)`` is centred at ``X = i - center``,
    ``Y = center - j`` and bin ``k`` at ``t = k - det_center`` (defaults: the
    ``"skimage"`` centring ``n // 2`` and ``D // 2``), in pixel units. Built
    directly in CSR order (columns sorted within a row). Weights are computed in
    float64 then cast to ``dtype``.
    """
    f64: dict[str, Any] = {"dtype": torch.float64, "device": device}
    theta = torch.deg2rad(angles_deg.to(**f64).reshape(-1))
    V, D, P = theta.numel(), n_detectors, n * n
    center = float(n // 2) if center is None else float(center)
    det_center = float(D // 2) if det_center is None else float(det_center)
    c, s = torch.cos(theta), torch.sin(theta)
    a, b = c.abs(), s.abs()  # box widths of the footprint, in detector units
    idx = torch.arange(n, **f64)
    X = (idx - center).reshape(1, n)  # column i
    Y = (center - idx).reshape(n, 1)  # row j, pointing up
    offsets = torch.tensor([-1.0, 0.0, 1.0], **f64)
    weights, columns = [], []
    for v0 in range(0, V, chunk):
        sl = slice(v0, min(V, v0 + chunk))
        t = (X[..., None] * c[sl] + Y[..., None] * s[sl]).reshape(P, -1)  # (P, v) in pixels
        u = t + det_center  # position in detector-index units
        k = torch.round(u)[..., None] + offsets  # (P, v, 3) candidate bins
        d = k - u[..., None]
        aa, bb = a[sl].reshape(1, -1, 1), b[sl].reshape(1, -1, 1)
        w = _footprint_cdf(d + 0.5, aa, bb) - _footprint_cdf(d - 0.5, aa, bb)
        inside = (k >= 0) & (k < D)
        w = torch.where(inside & (w > _PRUNE), w, torch.zeros_like(w))
        col = k.clamp(0, D - 1).long() + (torch.arange(sl.start, sl.stop, device=device) * D).reshape(1, -1, 1)
        weights.append(w.reshape(P, -1))
        columns.append(col.reshape(P, -1))
    w = torch.cat(weights, 1)
    col = torch.cat(columns, 1)
    keep = w > 0
    counts = keep.sum(1)
    nnz = int(counts.sum())
    index_dtype = torch.int32 if max(nnz, V * D, P) < 2**31 - 1 else torch.int64
    crow = torch.zeros(P + 1, dtype=torch.int64, device=device)
    crow[1:] = counts.cumsum(0)
    # the strip integral of a pixel of side s, averaged over a bin of width s, is s * w
    values = (w[keep] * pixel_size).to(dtype)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow.to(index_dtype), col[keep].to(index_dtype), values,
                                       size=(P, V * D), check_invariants=False)


def _transpose_csr(m: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return m.t().to_sparse_csr()


def radon_matrix(n: int, angles_deg: Tensor | Sequence[float], n_detectors: int | None = None,
                 pixel_size: float | None = None, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None, centering: str = "skimage") -> Tensor:
    """The plain (unreduced) projection matrix ``A``, sparse CSR ``(n_views*D, n*n)``.

    For inspection and tests; ``Tomography`` uses a symmetry-reduced version.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    D = n_detectors or default_detectors(n, centering)
    s = 1.0 / n if pixel_size is None else float(pixel_size)
    At = radon_matrix_transpose(n, torch.as_tensor(angles_deg), D, s, dtype, device,
                                rotation_center(n, centering), detector_center(D, centering))
    return _transpose_csr(At)


# ---------------------------------------------------------------------------------
# Symmetry reduction of the angle set
# ---------------------------------------------------------------------------------
# Q (2x2, acting on coordinates centred on the rotation centre) with Q^T e_theta = e_phi,
# phi in [0, 45]: then (A_theta x)[k] = (A_phi x_Q)[k] with x_Q[q] = x[Q q].
_SYMMETRIES = (
    ((1, 0), (0, 1)),  # theta in [0, 45]:    phi = theta
    ((0, 1), (1, 0)),  # theta in (45, 90]:   phi = 90 - theta
    ((0, -1), (1, 0)),  # theta in (90, 135]: phi = theta - 90
    ((-1, 0), (0, 1)),  # theta in (135, 180): phi = 180 - theta
)


def _reduce_angle(theta: float) -> tuple[int, float]:
    t = math.fmod(theta, 180.0)
    if t < 0:
        t += 180.0
    if t <= 45.0:
        return 0, t
    if t <= 90.0:
        return 1, 90.0 - t
    if t <= 135.0:
        return 2, t - 90.0
    return 3, 180.0 - t


def _symmetric(img: Tensor, g: int) -> Tensor:
    """``x_Q`` of ``_SYMMETRIES[g]`` for images ``(m, m, ...)`` (row, column first) on a grid
    symmetric about its centre ``(m - 1) / 2``: ``x_Q[q] = x[Q q]`` as flips and a transpose."""
    if g == 0:
        return img
    if g == 1:  # (X, Y) -> (Y, X): x_Q[j, i] = x[m-1-i, m-1-j]
        return img.flip(0, 1).transpose(0, 1)
    if g == 2:  # (X, Y) -> (-Y, X): x_Q[j, i] = x[m-1-i, j]
        return img.flip(0).transpose(0, 1)
    return img.flip(1)  # (X, Y) -> (-X, Y): x_Q[j, i] = x[j, m-1-i]


def _symmetric_transpose(img: Tensor, g: int) -> Tensor:
    """The inverse (= transpose) of ``_symmetric(., g)``."""
    if g == 2:
        return img.transpose(0, 1).flip(0)
    return _symmetric(img, g)  # the others are involutions


class RadonPlan:
    """``A`` for one angle set: a base matrix for a few angles and symmetries of the grid.

    ``A x`` = rows ``rows`` of ``[A_S (x_Q) for Q in symmetries]`` stacked, where
    ``A_S`` acts on the ``m x m`` grid symmetric about the rotation centre that
    holds the image (``m = n`` when the centre is the middle of the image; with
    the ``"skimage"`` centring and an even ``n``, ``m = n + 1``: one column of
    zeros on the right and one row of zeros at the bottom).
    """

    def __init__(self, n: int, angles_deg: Tensor, n_detectors: int, pixel_size: float,
                 dtype: torch.dtype, device: torch.device, centering: str = "skimage",
                 use_symmetry: bool = True):
        angles = [float(a) for a in angles_deg.reshape(-1).tolist()]
        V = len(angles)
        center = rotation_center(n, centering)
        det_center = detector_center(n_detectors, centering)
        half = max(center, n - 1 - center)
        m = round(2 * half + 1)
        reduced = [_reduce_angle(a) for a in angles]
        base = sorted({round(phi, 9) for _, phi in reduced})
        used = sorted({g for g, _ in reduced})
        self.n, self.D, self.V = n, n_detectors, V
        if use_symmetry and len(used) * len(base) <= 1.25 * V:
            slot = {g: i for i, g in enumerate(used)}
            pos = {phi: i for i, phi in enumerate(base)}
            rows = [slot[g] * len(base) + pos[round(phi, 9)] for g, phi in reduced]
            self.m, self.symmetries = m, used
            base_angles = torch.tensor(base, dtype=torch.float64)
            grid_center = (m - 1) / 2
        else:  # no useful symmetry: one matrix for all the views, on the image itself
            rows = list(range(V))
            self.m, self.symmetries = n, [0]
            base_angles = torch.tensor(angles, dtype=torch.float64)
            grid_center = center
        self.G = len(self.symmetries)
        # offset of the image in the grid (0 here: the grid extends the image right and down)
        self.offset = round((self.m - 1) / 2 - center) if self.m != n else 0
        self.n_base = base_angles.numel()
        self.rows = torch.tensor(rows, dtype=torch.long, device=device)
        # (view v) -> (symmetry, base angle) of the stacked output, for a single gather
        self.row_g = self.rows // self.n_base
        self.row_s = self.rows % self.n_base
        self.distinct_rows = len(set(rows)) == V  # else repeated views add up in the adjoint
        self.AT = radon_matrix_transpose(self.m, base_angles, n_detectors, pixel_size, dtype, device,
                                         grid_center, det_center)
        self.A = _transpose_csr(self.AT)

    @property
    def nnz(self) -> int:
        return int(self.A._nnz())

    def work(self, columns: int) -> int:
        """Multiply-adds of one sparse product with ``columns`` right-hand sides."""
        return self.nnz * self.G * columns

    def project(self, xf: Tensor) -> Tensor:
        """``(M, n*n) -> (M, V, D)``."""
        M, n, m = xf.shape[0], self.n, self.m
        G, S, D = self.G, self.n_base, self.D
        img = xf.reshape(M, n, n).permute(1, 2, 0)  # (n, n, M): a view
        if m != n:  # embed in the symmetric grid
            o = self.offset
            grid = img.new_zeros(m, m, M)
            grid[o:o + n, o:o + n] = img
            img = grid
        rhs = img.new_empty(m, m, G, M)  # right-hand sides (pixel, symmetry, sample)
        for k, g in enumerate(self.symmetries):
            rhs[:, :, k] = _symmetric(img, g)
        z = (self.A @ rhs.reshape(m * m, G * M)).reshape(S, D, G, M)
        # out[b, v, k] = z[s_v, k, g_v, b]
        return z.permute(3, 0, 2, 1)[:, self.row_s, self.row_g]

    def backproject(self, yf: Tensor) -> Tensor:
        """Exact transpose of ``project``: ``(M, V, D) -> (M, n*n)``."""
        M, n, m = yf.shape[0], self.n, self.m
        G, S, D = self.G, self.n_base, self.D
        w = yf.new_zeros(S, D, G, M)
        w.permute(3, 0, 2, 1).index_put_((torch.arange(M, device=yf.device)[:, None], self.row_s, self.row_g),
                                         yf, accumulate=not self.distinct_rows)
        u = (self.AT @ w.reshape(S * D, G * M)).reshape(m, m, G, M)
        out = None
        for k, g in enumerate(self.symmetries):
            ug = _symmetric_transpose(u[:, :, k], g)
            out = ug if out is None else out + ug
        assert out is not None  # at least one view, hence at least one symmetry
        o = self.offset
        return out[o:o + n, o:o + n].permute(2, 0, 1).reshape(M, n * n)


def cpu_threads(t: Tensor, work: int):
    """A context running a projection with at most ``SPARSE_CPU_THREADS`` CPU threads
    (one for less than ``SINGLE_THREAD_WORK`` multiply-adds).

    The whole projection (permutations, sparse product, re-indexing) is a chain of
    sub-millisecond kernels, each of which would otherwise wait at a thread barrier.
    """
    return at_most_threads(t, 1 if work < SINGLE_THREAD_WORK else SPARSE_CPU_THREADS)


_PLANS: OrderedDict[tuple, RadonPlan] = OrderedDict()


def radon_plan(n: int, angles: Tensor, D: int, s: float, dtype: torch.dtype, device: torch.device,
               centering: str = "skimage", use_symmetry: bool = True) -> RadonPlan:
    """The cached ``RadonPlan`` of this geometry (built on first use)."""
    key = (n, D, s, tuple(round(float(a), 9) for a in angles.reshape(-1).tolist()),
           str(device), dtype, centering, use_symmetry)
    plan = _PLANS.get(key)
    if plan is None:
        plan = RadonPlan(n, angles, D, s, dtype, device, centering, use_symmetry)
        _PLANS[key] = plan
        while len(_PLANS) > 1 and (len(_PLANS) > CACHE_SIZE
                                   or sum(p.nnz for p in _PLANS.values()) > CACHE_MAX_NNZ):
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return plan


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xf: Tensor, plan: RadonPlan) -> Tensor:
        ctx.plan = plan
        with cpu_threads(xf, plan.work(xf.shape[0])):
            return plan.project(xf)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _Backproject.apply(grad, ctx.plan), None


class _Backproject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, yf: Tensor, plan: RadonPlan) -> Tensor:
        ctx.plan = plan
        with cpu_threads(yf, plan.work(yf.shape[0])):
            return plan.backproject(yf)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _Project.apply(grad, ctx.plan), None


def project(xf: Tensor, plan: RadonPlan) -> Tensor:
    """``A x`` for flattened images ``(M, n*n) -> (M, V, D)``; its gradient is ``backproject``."""
    return _Project.apply(xf, plan)


def backproject(yf: Tensor, plan: RadonPlan) -> Tensor:
    """``A^T y`` for sinograms ``(M, V, D) -> (M, n*n)``; its gradient is ``project``."""
    return _Backproject.apply(yf, plan)
