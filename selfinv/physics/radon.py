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
from contextlib import contextmanager
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["radon_matrix", "radon_matrix_transpose", "default_detectors", "RadonPlan", "radon_plan",
           "project", "backproject", "cpu_threads"]

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


def radon_matrix_transpose(n: int, angles_deg: Tensor, n_detectors: int, pixel_size: float,
                           dtype: torch.dtype, device: torch.device, chunk: int = 8) -> Tensor:
    """``A^T`` as a sparse CSR matrix of shape ``(n*n, n_views*n_detectors)``.

    Row ``p = j*n + i`` (pixel), column ``v*D + k`` (view, detector bin). Built
    directly in CSR order (columns sorted within a row). Weights are computed in
    float64 then cast to ``dtype``.
    """
    f64 = dict(dtype=torch.float64, device=device)
    theta = torch.deg2rad(angles_deg.to(**f64).reshape(-1))
    V, D, P = theta.numel(), n_detectors, n * n
    c, s = torch.cos(theta), torch.sin(theta)
    a, b = c.abs(), s.abs()  # box widths of the footprint, in detector units
    coord = torch.arange(n, **f64) - (n - 1) / 2
    X = coord.reshape(1, n)  # column i
    Y = -coord.reshape(n, 1)  # row j, pointing up
    offsets = torch.tensor([-1.0, 0.0, 1.0], **f64)
    weights, columns = [], []
    for v0 in range(0, V, chunk):
        sl = slice(v0, min(V, v0 + chunk))
        t = (X[..., None] * c[sl] + Y[..., None] * s[sl]).reshape(P, -1)  # (P, v) in pixels
        u = t + (D - 1) / 2  # position in detector-index units
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
                 device: torch.device | str | None = None) -> Tensor:
    """The plain (unreduced) projection matrix ``A``, sparse CSR ``(n_views*D, n*n)``.

    For inspection and tests; ``Tomography`` uses a symmetry-reduced version.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    D = n_detectors or default_detectors(n)
    s = 1.0 / n if pixel_size is None else float(pixel_size)
    At = radon_matrix_transpose(n, torch.as_tensor(angles_deg), D, s, dtype, device)
    return _transpose_csr(At)


def default_detectors(n: int) -> int:
    """``ceil(sqrt(2) n)``: the diagonal, so that every pixel projects on the detector."""
    return int(math.ceil(math.sqrt(2) * n - 1e-9))


# ---------------------------------------------------------------------------------
# Symmetry reduction of the angle set
# ---------------------------------------------------------------------------------
# Q (2x2, acting on centred pixel coordinates) with Q^T e_theta = e_phi, phi in [0, 45]:
# then (A_theta x)[k] = (A_phi x_Q)[k] with x_Q[q] = x[Q q].
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


def _pixel_permutation(n: int, q: tuple[tuple[int, int], tuple[int, int]], device) -> Tensor:
    """Flat index ``perm`` with ``x_Q.flatten() = x.flatten()[perm]``."""
    c = (n - 1) / 2
    j, i = torch.meshgrid(torch.arange(n, device=device), torch.arange(n, device=device), indexing="ij")
    X, Y = i - c, c - j
    Xp = q[0][0] * X + q[0][1] * Y
    Yp = q[1][0] * X + q[1][1] * Y
    ip = torch.round(Xp + c).long()
    jp = torch.round(c - Yp).long()
    return (jp * n + ip).reshape(-1)


class RadonPlan:
    """``A`` for one angle set: base matrices for a few angles and pixel permutations.

    ``A x`` = rows ``rows`` of ``[A_S (x_Q) for Q in transforms]`` stacked.
    """

    def __init__(self, n: int, angles_deg: Tensor, n_detectors: int, pixel_size: float,
                 dtype: torch.dtype, device: torch.device, use_symmetry: bool = True):
        angles = [float(a) for a in angles_deg.reshape(-1).tolist()]
        V = len(angles)
        reduced = [_reduce_angle(a) for a in angles]
        base = sorted({round(phi, 9) for _, phi in reduced})
        used = sorted({g for g, _ in reduced})
        if use_symmetry and len(used) * len(base) <= 1.25 * V:
            slot = {g: i for i, g in enumerate(used)}
            pos = {phi: i for i, phi in enumerate(base)}
            rows = [slot[g] * len(base) + pos[round(phi, 9)] for g, phi in reduced]
            self.perms = [None if g == 0 else _pixel_permutation(n, _SYMMETRIES[g], device) for g in used]
            base_angles = torch.tensor(base, dtype=torch.float64)
        else:  # no useful symmetry: one matrix for all the views
            rows = list(range(V))
            self.perms = [None]
            base_angles = torch.tensor(angles, dtype=torch.float64)
        self.inv_perms = [None if p is None else torch.argsort(p) for p in self.perms]
        self.n, self.D, self.V = n, n_detectors, V
        self.n_base = base_angles.numel()
        self.rows = torch.tensor(rows, dtype=torch.long, device=device)
        self.AT = radon_matrix_transpose(n, base_angles, n_detectors, pixel_size, dtype, device)
        self.A = _transpose_csr(self.AT)

    @property
    def nnz(self) -> int:
        return int(self.A._nnz())

    def work(self, columns: int) -> int:
        """Multiply-adds of one sparse product with ``columns`` right-hand sides."""
        return self.nnz * len(self.perms) * columns

    def project(self, xf: Tensor) -> Tensor:
        """``(M, n*n) -> (M, V, D)``."""
        M = xf.shape[0]
        G, S, D = len(self.perms), self.n_base, self.D
        stack = torch.cat([xf if p is None else xf[:, p] for p in self.perms], 0)  # (G M, P)
        z = self.A @ stack.t().contiguous()  # (S D, G M)
        z = z.reshape(S, D, G, M).permute(2, 0, 3, 1).reshape(G * S, M, D)
        return z.index_select(0, self.rows).permute(1, 0, 2)

    def backproject(self, yf: Tensor) -> Tensor:
        """Exact transpose of ``project``: ``(M, V, D) -> (M, n*n)``."""
        M = yf.shape[0]
        G, S, D = len(self.perms), self.n_base, self.D
        w = yf.new_zeros(G * S, M, D).index_add_(0, self.rows, yf.permute(1, 0, 2))
        w = w.reshape(G, S, M, D).permute(1, 3, 0, 2).reshape(S * D, G * M)
        u = (self.AT @ w.contiguous()).reshape(-1, G, M)  # (P, G, M)
        out = None
        for g, ip in enumerate(self.inv_perms):
            ug = u[:, g].t()  # (M, P)
            ug = ug if ip is None else ug[:, ip]
            out = ug.contiguous() if out is None else out + ug
        return out


@contextmanager
def cpu_threads(t: Tensor, work: int):
    """Run a projection with at most ``SPARSE_CPU_THREADS`` CPU threads (1 for small ``work``).

    The whole projection (permutations, sparse product, re-indexing) is a chain of
    sub-millisecond kernels, each of which would otherwise wait at a thread barrier.
    """
    threads = torch.get_num_threads()
    wanted = 1 if work < SINGLE_THREAD_WORK else min(threads, SPARSE_CPU_THREADS or threads)
    if t.device.type != "cpu" or wanted == threads:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_PLANS: "OrderedDict[tuple, RadonPlan]" = OrderedDict()


def radon_plan(n: int, angles: Tensor, D: int, s: float, dtype, device, use_symmetry: bool) -> RadonPlan:
    key = (n, D, s, tuple(round(float(a), 9) for a in angles.reshape(-1).tolist()),
           str(device), dtype, use_symmetry)
    plan = _PLANS.get(key)
    if plan is None:
        plan = RadonPlan(n, angles, D, s, dtype, device, use_symmetry)
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
