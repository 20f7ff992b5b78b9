"""Stein's Unbiased Risk Estimator (SURE) for Gaussian, Poisson and Poisson–Gaussian noise.

With ``h(y) = A f(y, A)`` the estimate of the noiseless measurement and ``n``
the number of entries (after an optional border ``margin`` is removed),

``SURE(y) = ( ||y - h(y)||² - Σ_i c_i + 2 Σ_i w_i ∂h_i/∂y_i - 2 Σ_i v_i ∂²h_i/∂y_i² ) / n``

is an (approximately, see below) unbiased estimate of the measurement-domain
risk ``||h(y) - A x||² / n`` — the image-domain MSE for ``A = I`` or any
orthogonal ``A``; for other ``A`` it only controls the component of the error
in the range of ``A`` (used as the data-fit term of SEI deblurring). The
``- Σ c_i`` constant is included, so ``E[SURE] = E[||h(y) - A x||²] / n``.

| noise | ``c_i`` | ``w_i`` | ``v_i`` | reference |
|---|---|---|---|---|
| Gaussian ``N(z, σ²)`` | ``σ²`` | ``σ²`` | 0 | Stein (1981) |
| Poisson ``γ P(z/γ)`` | ``γ y_i`` | ``γ y_i`` | ``γ² y_i / 2`` | Hudson (1978) |
| Poisson–Gaussian | ``γ y_i + σ²`` | ``γ y_i + σ²`` | ``γ² y_i / 2 + γ σ²`` | Le Montagner et al. (2014) |

The sums run over the entries that carry noise. Operators whose measurement
keeps zeros where nothing is measured (inpainting, Cartesian MRI) say which
entries are measured with ``physics.measurement_mask(y)``; there ``y_i = 0``
exactly, with no noise, so ``c_i = w_i = v_i = 0`` (counting ``σ²`` there would
offset SURE by ``-σ² ×`` the unobserved fraction). ``n`` still counts every
entry, as the risk ``||h(y) - A x||² / n`` does.

Gaussian SURE is exact. For Poisson(–Gaussian) noise the exact identities of
Hudson / Luisier et al. (2011) read
``E[(y-z)ᵀh] = Σ_i E[y_i (h_i(y) - h_i(y - γ e_i)) + σ² ∂_i h_i(y - γ e_i)]``,
which costs one network evaluation per pixel; as in Le Montagner et al. (2014),
"An unbiased risk estimator for image denoising in the presence of mixed
Poisson–Gaussian noise", we replace it by its second-order Taylor expansion in
``γ`` (exact for affine ``h``; error ``O(γ³ ∂³h)``, and ``O(γ² ∂²h)`` if
``second_order=False``).

Derivatives are estimated by Monte Carlo (Ramani et al. 2008; Le Montagner et
al. 2014) with a single probe ``μ`` per sample, ``E[μ_i μ_j] = δ_ij`` (``probes=K`` averages ``K``
independent ones: variance / K, K times the derivative evaluations):

* Gaussian: ``Σ w_i ∂_i h_i ≈ (w∘ω)ᵀ (h(y + τω) - h(y)) / τ`` with
  ``ω ~ N(0, I)`` or, with ``probe="rademacher"``, ``ω_i = ±1`` (2 evaluations). Both are unbiased
  (Hutchinson 1989); for ``J = ∂h/∂y`` the estimate ``ωᵀJω`` has variance ``2‖J_s‖²_F`` (``J_s`` its
  symmetric part) with Gaussian ``ω`` and ``2‖J_s‖²_F − 2 Σ_i J_ii²`` with Rademacher ``ω``: the diagonal
  no longer adds noise to the estimate. Measured on the Gaussian claim row (12 000 steps, 2 seeds) Rademacher
  probes train a network 0.21 dB *worse* (31.53 against 31.74 dB), and on the first-order Poisson row the same
  (26.65 / 26.61): the divergence's variance is not what limits SURE there, so Gaussian stays the default;
* Poisson(–Gaussian): ``μ`` two-point (``2`` w.p. 0.2, ``-1/2`` w.p. 0.8: mean 0,
  variance 1, third moment ``κ₃ = 3/2``);
  ``Σ w_i ∂_i h_i ≈ (w∘μ)ᵀ (h(y+τμ) - h(y-τμ)) / (2τ)`` and
  ``Σ v_i ∂²_ii h_i ≈ (v∘μ)ᵀ (h(y+τμ) - 2h(y) + h(y-τμ)) / (κ₃ τ²)``
  (3 evaluations; the skewed probe is what makes the diagonal of the second
  derivative identifiable: ``E[μ_i μ_j μ_k] = κ₃ δ_ijk``).

The step ``τ`` must be small against the noise: the finite difference measures
the slope of ``h`` averaged over ``τ``, and a network trained on it can learn
structure at that scale which makes the estimate fall below the local divergence
(it then keeps the noise while its SURE looks better than the truth). Seen in
scale-equivariant SR ×2 with ``τ = 0.01`` at ``σ = 0.0196``: the finite-difference
divergence of the trained network was −0.05 per entry, its Jacobian's +0.52.
It must not be much smaller either: the trained network is then worse too. Measured on
the denoising claim rows of ``selfinv reproduce`` (natural photographs, ReLU U-Net,
12 000 steps; PSNR in dB, seed 0; ``σ_noise`` the root-mean-square noise level,
``sqrt(mean(γ y))`` = 0.144 for Poisson):

* Gaussian σ = 0.1 (supervised 32.15), τ/σ = 0.01: 29.22 · 0.05: 31.28 · **0.1: 31.76** ·
  0.15: 31.66 · 0.2: 29.15 (falling);
* Poisson γ = 0.05, second order (supervised 30.38), τ/σ_noise = 0.07: 28.27 · 0.10: 29.49 ·
  0.14: 29.90 · **0.17: 30.30** · 0.21: 30.16 · 0.28: 28.17 (falling);
* Poisson γ = 0.05, first order: 0.07: 26.61 · 0.14: 26.57.

("falling": the test PSNR drops over the last 20 % of training, by 1.00 and 1.23 dB:
the network learns to fool the estimate.) ``tau: auto`` takes
``σ_noise/10`` (first order) and ``σ_noise/6`` (second order, whose ``1/τ²`` makes it
noisier at small steps). A central difference (``difference="central"``, one more evaluation) buys the Gaussian row
+0.03 dB over 3 training seeds at σ/10 (31.87 / 31.58 / 31.62 against 31.76 / 31.72 / 31.49;
supervised 32.15 / 31.86 / 32.13; +0.10 with the shifted inputs in separate batches, i.e. other
floating-point sums: the gain is of the size of that noise) and does not move the cliff (28.14 at σ/5).
A smooth network does not remove the trade-off: a U-Net with
SiLU activations trained by SURE at ``τ = σ/10`` fell from its best checkpoint (step
3 400) to 26.52 dB and reached 30.18 at ``σ/20`` (its supervised twin: 31.62). The
first forward pass warns above a quarter of the noise level.

``divergence="exact"`` computes the diagonal derivatives by autograd instead
(one backward pass per entry, two with the second-order term: only for small
images, see ``max_exact_entries``; ``y`` is detached there). The second
derivative of a map affine in ``y`` is 0, so SURE is then exact whatever
``second_order``. In training the derivative graphs are not kept: the backward
pass recomputes them one entry at a time (``exact_weighted_derivatives``), so
the memory is that of one entry's graph, not ``n`` of them. Both modes assume
the model treats batch samples independently (no batch-norm in training mode);
with ``batch_evaluations`` (default) the two evaluations of the Gaussian
Monte-Carlo divergence, ``f(y)`` and ``f(y + τω)``, are one forward pass of the
doubled batch (the same numbers; faster where the network is small for the
hardware), unless another term of a sum already computed ``f(y)``.
Works for any ``Physics`` whose ``A`` maps back to the measurement shape
(invertible / square operators, blur, denoising, inpainting, MRI).
"""

from __future__ import annotations

import warnings
from typing import Callable, Literal, cast

import torch
from torch import Tensor

from selfinv.losses.base import Loss, LossConfigError, Reconstructor, SharedEvaluation
from selfinv.physics.base import Physics
from selfinv.utils import rng

#: two-point probe used for second-order Monte-Carlo derivatives
_SKEW_P = 0.2
_SKEW_HI, _SKEW_LO = 2.0, -0.5  # mean 0, variance 1
_SKEW_M3 = 1.5  # third moment
#: ``tau: auto`` is the noise level over this (``SURE.step_size``; measured in the module docstring): the first-order
#: (Gaussian) estimate is best at σ/10, the second-order Poisson one, which divides by τ², at about 1/6 of it
AUTO_TAU_DIVISOR = 10
AUTO_TAU_DIVISOR_SECOND_ORDER = 6


def _smallest_sigma(sigma: object) -> float | None:
    """The smallest noise level of a scalar or per-sample ``sigma`` (None when unknown or not numeric)."""
    if sigma is None:
        return None
    try:
        value = float(torch.as_tensor(sigma).min())
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if value > 0 else None


def skewed_probe(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Two-point probe: ``2`` w.p. 0.2 else ``-1/2`` (mean 0, variance 1, third moment 3/2)."""
    u = rng.rand_like(like, generator)
    return torch.where(u < _SKEW_P, torch.full_like(like, _SKEW_HI), torch.full_like(like, _SKEW_LO))


#: the Monte-Carlo probes of the first-order divergence: i.i.d. entries of mean 0 and variance 1
PROBES = ("gaussian", "rademacher")


def draw_probe(like: Tensor, probe: str = "gaussian", generator: torch.Generator | None = None) -> Tensor:
    """A Monte-Carlo probe ``ω`` shaped like ``like``: ``N(0, I)`` (``"gaussian"``) or ``±1`` (``"rademacher"``)."""
    if probe == "rademacher":
        return rng.rademacher_like(like, generator)
    if probe != "gaussian":
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    return rng.randn_like(like, generator)


def mc_divergence(fn: Callable[[Tensor], Tensor], y: Tensor, tau: float | Tensor,
                  generator: torch.Generator | None = None, weight: Tensor | float = 1.0,
                  fy: Tensor | None = None, probe: str = "gaussian", central: bool = False) -> Tensor:
    """Per-sample weighted divergence ``Σ_i w_i ∂f_i/∂y_i ≈ (w∘ω)ᵀ (f(y+τω) - f(y)) / τ``, or with ``central``
    ``(w∘ω)ᵀ (f(y+τω) - f(y-τω)) / (2τ)`` (exact for a quadratic ``f``, one more evaluation).

    ``ω ~ N(0, I)`` or ``±1`` (``probe``, see ``draw_probe``); returns a tensor of shape ``(B,)``.
    Ramani, Blu & Unser (2008).
    """
    omega = draw_probe(y, probe, generator)
    if central:
        return ((weight * omega) * (fn(y + tau * omega) - fn(y - tau * omega))).flatten(1).sum(1) / (2 * tau)
    fy = fn(y) if fy is None else fy
    return ((weight * omega) * (fn(y + tau * omega) - fy)).flatten(1).sum(1) / tau


def mc_second_order_derivatives(fn: Callable[[Tensor], Tensor], y: Tensor, tau: float | Tensor,
                                generator: torch.Generator | None = None, weight1: Tensor | float = 1.0,
                                weight2: Tensor | float = 1.0, fy: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-sample ``(Σ w_i ∂f_i/∂y_i, Σ v_i ∂²f_i/∂y_i²)`` from one skewed probe ``μ`` (3 evaluations).

    ``(w∘μ)ᵀ (f(y+τμ) - f(y-τμ)) / (2τ)`` and ``(v∘μ)ᵀ (f(y+τμ) - 2f(y) + f(y-τμ)) / (κ₃ τ²)``;
    unbiased up to ``O(τ²)`` because ``E[μ_i μ_j] = δ_ij`` and ``E[μ_i μ_j μ_k] = κ₃ δ_ijk``
    (Le Montagner et al. 2014). Shapes ``(B,)``.
    """
    mu = skewed_probe(y, generator)
    fy = fn(y) if fy is None else fy
    fp, fm = fn(y + tau * mu), fn(y - tau * mu)
    d1 = ((weight1 * mu) * (fp - fm)).flatten(1).sum(1) / (2 * tau)
    d2 = ((weight2 * mu) * (fp - 2 * fy + fm)).flatten(1).sum(1) / (_SKEW_M3 * tau**2)
    return d1, d2


def _diag_entry(out: Tensor, y_: Tensor, k: int, second_order: bool,
                create_graph: bool) -> tuple[Tensor, Tensor | None]:
    """``(∂out_k/∂y_k, ∂²out_k/∂y_k²)`` per sample (shape ``(B,)``) for the flat entry ``k``.

    ``out`` is ``h(y_)`` reshaped to ``(B, n)`` and ``y_`` the leaf it was computed from
    (samples assumed independent).
    A derivative that does not depend on ``y`` — every second derivative of an affine map, or
    the first one of a constant map — is 0 (``allow_unused`` / ``materialize_grads``), not an error.
    """
    zero = torch.zeros(out.shape[0], dtype=out.dtype, device=out.device)
    if not out.requires_grad:  # the output does not depend on y at all
        return zero, (zero if second_order else None)
    (g,) = torch.autograd.grad(out[:, k].sum(), y_, create_graph=create_graph or second_order,
                               retain_graph=True, allow_unused=True, materialize_grads=True)
    d1 = g.reshape(out.shape)[:, k]
    if not second_order:
        return d1, None
    if not d1.requires_grad:  # the first derivative is a constant: affine in y
        return d1, zero
    (g2,) = torch.autograd.grad(d1.sum(), y_, create_graph=create_graph, retain_graph=True,
                                allow_unused=True, materialize_grads=True)
    return d1, g2.reshape(out.shape)[:, k]


def exact_diagonal_derivatives(fn: Callable[[Tensor], Tensor], y: Tensor, second_order: bool = False,
                               create_graph: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(f(y), ∂f_i/∂y_i, ∂²f_i/∂y_i²)`` by autograd (entry-wise, shape of ``y``); small images only.

    One backward pass per entry (two with ``second_order``). ``f`` must map the shape of ``y`` to
    itself and treat the samples of the batch independently; ``y`` is detached. Memory: one graph
    at a time with ``create_graph=False``; with ``create_graph=True`` the graphs of all ``n``
    entries are kept (``n`` times the memory of one backward) — ``SURE`` does not use that path
    for training, see ``exact_weighted_derivatives``.
    """
    y_ = y.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(y_)
        if out.shape != y.shape:
            raise ValueError(f"diagonal derivatives need output shape == input shape, got "
                             f"{tuple(out.shape)} and {tuple(y.shape)}")
        flat = out.reshape(y.shape[0], -1)
        d1, d2 = [], []
        for k in range(flat.shape[1]):
            a, b = _diag_entry(flat, y_, k, second_order, create_graph)
            d1.append(a if create_graph else a.detach())
            if b is not None:
                d2.append(b if create_graph else b.detach())
    d1_t = torch.stack(d1, dim=1).reshape(y.shape)
    d2_t = torch.stack(d2, dim=1).reshape(y.shape) if second_order else None
    return (out if create_graph else out.detach()), d1_t, d2_t


def _graph_leaves(t: Tensor, exclude: Tensor) -> tuple[Tensor, ...]:
    """The leaf tensors requiring grad that ``t`` depends on (``exclude`` left out)."""
    leaves: list[Tensor] = []
    seen: set = set()
    stack = [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        var = getattr(node, "variable", None)  # an AccumulateGrad node: a leaf
        if var is not None:
            if var is not exclude and not any(var is l for l in leaves):
                leaves.append(var)
            continue
        stack.extend(f for f, _ in node.next_functions)
    return tuple(leaves)


def _weighted_diagonal_sum(fn: Callable[[Tensor], Tensor], y: Tensor, w: Tensor, v: Tensor | None,
                           leaves: tuple[Tensor, ...] = (), grad_out: Tensor | None = None):
    """``Σ_k w_k ∂h_k/∂y_k - v_k ∂²h_k/∂y_k²`` per sample; with ``leaves``, instead its
    vector-Jacobian product ``grad_out`` w.r.t. them, accumulated entry by entry.

    One forward pass of ``fn`` is shared by the entries; the derivative graph of an entry is
    dropped before the next one is built, so the memory is that of one entry.
    """
    B, n = y.shape[0], y[0].numel()
    wf = w.reshape(B, n)
    vf = v.reshape(B, n) if v is not None else None
    want_grads = len(leaves) > 0
    total = torch.zeros(B, dtype=y.dtype, device=y.device)
    grads = [torch.zeros_like(l) for l in leaves]
    with torch.enable_grad():
        y_ = y.detach().requires_grad_(True)
        out = fn(y_)
        if out.shape != y.shape:
            raise ValueError(f"diagonal derivatives need output shape == input shape, got "
                             f"{tuple(out.shape)} and {tuple(y.shape)}")
        flat = out.reshape(B, n)
        for k in range(n):
            d1, d2 = _diag_entry(flat, y_, k, vf is not None, create_graph=want_grads)
            term = wf[:, k] * d1
            if vf is not None:
                assert d2 is not None  # asked for (second_order=True)
                term = term - vf[:, k] * d2
            if not want_grads:
                total = total + term.detach()
            elif term.requires_grad:
                gs = torch.autograd.grad(term, leaves, grad_outputs=grad_out, retain_graph=True,
                                         allow_unused=True, materialize_grads=True)
                for acc, g in zip(grads, gs, strict=True):
                    acc.add_(g)
    return grads if want_grads else total


class _ExactWeightedDerivatives(torch.autograd.Function):
    """``_weighted_diagonal_sum`` as a checkpoint: nothing kept from the forward pass; the backward
    pass recomputes it entry by entry and returns the gradients of the given leaves."""

    @staticmethod
    def forward(ctx, fn, y, w, v, *leaves):
        ctx.fn, ctx.leaves = fn, leaves
        ctx.save_for_backward(y, w, v)
        return _weighted_diagonal_sum(fn, y, w, v)

    @staticmethod
    def backward(ctx, grad_out):
        y, w, v = ctx.saved_tensors
        grads = _weighted_diagonal_sum(ctx.fn, y, w, v, ctx.leaves, grad_out)
        return (None, None, None, None, *grads)


def exact_weighted_derivatives(fn: Callable[[Tensor], Tensor], y: Tensor, w: Tensor,
                               v: Tensor | None = None) -> Tensor:
    """Per-sample ``Σ_i w_i ∂h_i/∂y_i - Σ_i v_i ∂²h_i/∂y_i²`` by autograd, shape ``(B,)``.

    ``h = fn`` maps the shape of ``y`` to itself and treats the samples independently; ``y``,
    ``w`` and ``v`` (tensors of the shape of ``y``) are treated as constants. One forward pass
    and one backward pass per entry (two with ``v``). With gradient tracking, the result is
    differentiable w.r.t. every leaf tensor ``fn`` uses (the model's parameters, found on the
    graph of one forward pass) by recomputation: the backward pass redoes the entries one at a
    time, so the memory is that of one entry's graph rather than ``n`` of them (holding them
    all took > 10 GB for a small CNN on 16x16 images), for about twice the time. ``fn`` must be
    deterministic (no dropout) since it is evaluated again in the backward pass.
    """
    if w.shape != y.shape or (v is not None and v.shape != y.shape):
        raise ValueError(f"weights must have the shape of y {tuple(y.shape)}, got {tuple(w.shape)}"
                         + ("" if v is None else f" and {tuple(v.shape)}"))
    y, w = y.detach(), w.detach()
    v = v.detach() if v is not None else None
    if not torch.is_grad_enabled():
        return _weighted_diagonal_sum(fn, y, w, v)
    probe = y.clone().requires_grad_(True)
    leaves = _graph_leaves(fn(probe), exclude=probe)
    return _ExactWeightedDerivatives.apply(fn, y, w, v, *leaves)


def exact_divergence(fn: Callable[[Tensor], Tensor], y: Tensor, weight: Tensor | float = 1.0,
                     create_graph: bool = False) -> Tensor:
    """Per-sample ``Σ_i w_i ∂f_i/∂y_i`` by autograd, shape ``(B,)``."""
    if not create_graph:
        with torch.no_grad():
            return exact_weighted_derivatives(fn, y, torch.as_tensor(weight, dtype=y.dtype,
                                                                      device=y.device).expand_as(y))
    w = torch.as_tensor(weight, dtype=y.dtype, device=y.device).expand_as(y)
    with torch.enable_grad():
        return exact_weighted_derivatives(fn, y, w)


def border_mask(y: Tensor, margin: int) -> Tensor:
    """1 inside, 0 on a border of width ``margin`` of the last two dims (broadcastable to ``y``)."""
    H, W = y.shape[-2:]
    if 2 * margin >= min(H, W):
        raise ValueError(f"margin {margin} leaves no pixel in a {H}x{W} measurement")
    m = torch.zeros(H, W, dtype=y.dtype, device=y.device)
    m[margin:H - margin, margin:W - margin] = 1
    return m


def _can_batch(model: Reconstructor, y: Tensor, physics: Physics) -> bool:
    """Whether ``f(y)`` and ``f(y + τω)`` can be one forward pass of the doubled batch: ``f(y)`` is not
    already computed by another term (then it is reused instead) and the operator's per-sample parameters
    can be repeated."""
    if isinstance(model, SharedEvaluation) and model.cached(y, physics) is not None:
        return False
    return all(p.shape[0] in (1, y.shape[0]) for p in physics.params().values())


def _evaluate_together(model: Reconstructor, y: Tensor, *others: Tensor, physics: Physics) -> tuple[Tensor, ...]:
    """``(A f(y), A f(others[0]), ...)`` from one network evaluation of ``cat([y, *others])`` (the operator's
    per-sample parameters repeated); ``f(y)`` is offered to the other terms of a ``WeightedSum``."""
    B, k = y.shape[0], 1 + len(others)
    params = {n: torch.cat([p] * k) if p.shape[0] == B and B > 1 else p for n, p in physics.params().items()}
    every = physics.with_params(**params) if params else physics
    net = model.model if isinstance(model, SharedEvaluation) else model
    x = net(torch.cat([y, *others]), every)
    if isinstance(model, SharedEvaluation):
        model.store(y, physics, x[:B])
    return tuple(every.A(x).split(B))


class SURE(Loss):
    """Stein's unbiased risk estimate (see module docstring for the formulas).

    Args:
        noise: ``"gaussian"``, ``"poisson"`` or ``"poisson_gaussian"``; must match
            ``physics.noise`` (σ, γ are read from it, scalars or per-sample).
        tau: finite-difference step of the Monte-Carlo derivatives, in the units of the
            measurements the loss receives (``selfinv fit`` normalises the data to order one,
            ``selfinv.data.normalization``); best near ``σ/10`` of the noise in those units (Gaussian;
            about ``1/6`` of the noise level for second-order Poisson; see the module docstring — the first
            forward pass warns above a quarter of it).
            ``"auto"``: a tenth of the smallest σ of each batch (Gaussian), a sixth (second order) or a tenth
            (first order) of the root-mean-square noise level ``sqrt(mean(γ y + σ²))`` of each batch
            (Poisson(–Gaussian)), in those units — the best steps measured (module docstring), and what to
            use when the noise level is estimated (``sigma: auto``) or the data's scale is unknown.
        divergence: ``"mc"`` (Monte Carlo) or ``"exact"`` (autograd; small images).
        margin: ignore a border of this width (data fit and divergence), e.g. for
            circular-boundary mismatch in deblurring.
        second_order: include the ``γ``-second-order Taylor term (Poisson / PG): 3 network evaluations a step
            instead of 2, and worth them — on the Poisson claim row (γ = 0.05, 12 000 steps) the first-order
            form trains to 26.6 dB whatever its step, the default to 30.30 at its best step (supervised 30.38).
        max_exact_entries: ``divergence="exact"`` refuses measurements with more entries per
            sample than this (it costs one double-backward pass per entry, and as much again
            in the backward pass of training).
        batch_evaluations: evaluate ``f(y)`` and ``f(y + τω)`` as one doubled batch (Gaussian, one probe).
        probes: independent Monte-Carlo probes averaged per step (``divergence="mc"``): the variance of
            the derivative estimate divided by ``probes``, at ``probes`` (Gaussian) or ``2 × probes``
            (Poisson, second order) network evaluations besides ``f(y)``.
        probe: distribution of the first-order Monte-Carlo probe ``ω``: ``"gaussian"`` or ``"rademacher"``
            (±1: the same cost, a smaller variance of the estimate, but no better network where measured: see
            the module docstring). The second-order Poisson
            estimate needs its skewed two-point probe (a third moment) and refuses ``"rademacher"``.
        difference: the first-order Monte-Carlo divergence's finite difference: ``"forward"``
            ``(f(y+τω) - f(y)) / τ`` (2 evaluations a step) or ``"central"`` ``(f(y+τω) - f(y-τω)) / (2τ)``
            (3, as one tripled batch with ``batch_evaluations``): its error is ``O(τ²)`` probe by probe, not
            ``O(τ)`` (the same mean; less variance). Measured in the module docstring.

    Example:
        >>> import torch
        >>> from selfinv.physics import Denoising, GaussianNoise
        >>> physics = Denoising(GaussianNoise(0.1))
        >>> y = physics(torch.rand(2, 1, 16, 16), generator=torch.Generator().manual_seed(0))
        >>> loss = SURE(tau=0.005, probes=2)
        >>> loss.evaluations_per_step
        3
        >>> identity = lambda v, physics: v  # h(y) = y: risk E||y - x||²/n = σ²
        >>> round(float(loss(y, physics, identity)), 2)
        0.01
    """

    #: assumes pixel-wise independent noise (``Loss.tolerated_noise_correlation``)
    tolerated_noise_correlation: int | None = 0

    def __init__(self, noise: Literal["gaussian", "poisson", "poisson_gaussian"] = "gaussian",
                 tau: float | Literal["auto"] = 1e-2, divergence: Literal["mc", "exact"] = "mc", margin: int = 0,
                 second_order: bool = True, max_exact_entries: int = 4096, batch_evaluations: bool = True,
                 probes: int = 1, probe: Literal["gaussian", "rademacher"] = "gaussian",
                 difference: Literal["forward", "central"] = "forward"):
        super().__init__()
        if noise not in ("gaussian", "poisson", "poisson_gaussian"):
            raise LossConfigError(f"SURE noise must be 'gaussian', 'poisson' or 'poisson_gaussian', got {noise!r}")
        if divergence not in ("mc", "exact"):
            raise LossConfigError(f"divergence must be 'mc' or 'exact', got {divergence!r}")
        if isinstance(tau, str):
            if tau != "auto":
                raise LossConfigError(f"tau must be a number > 0 or 'auto', got {tau!r}")
            if divergence != "mc":
                raise LossConfigError(f"tau: auto sets the step of the Monte-Carlo derivatives (divergence: mc), got "
                                      f"divergence {divergence!r}, which takes no step")
        elif tau <= 0:
            raise LossConfigError(f"tau must be > 0, got {tau}")
        if margin < 0:
            raise LossConfigError(f"margin must be >= 0, got {margin}")
        if max_exact_entries < 1:
            raise LossConfigError(f"max_exact_entries must be >= 1, got {max_exact_entries}")
        if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
            raise LossConfigError(f"probes must be an integer >= 1 (Monte-Carlo probes per step), got {probes!r}")
        if probe not in PROBES:
            raise LossConfigError(f"probe must be one of {PROBES}, got {probe!r}")
        if difference not in ("forward", "central"):
            raise LossConfigError(f"difference must be 'forward' or 'central', got {difference!r}")
        if probe != "gaussian" and noise != "gaussian" and second_order:
            raise LossConfigError(f"probe={probe!r}: the second-order {noise} SURE needs its skewed two-point probe "
                                  f"(a non-zero third moment); use probe: gaussian or second_order: false")
        self.noise = noise
        #: distribution of the first-order Monte-Carlo probe (``draw_probe``)
        self.probe = probe
        #: the finite-difference step, or None for ``tau: auto`` (the noise level / ``AUTO_TAU_DIVISOR`` per batch,
        #: ``step_size``)
        self.tau: float | None = None if isinstance(tau, str) else float(tau)
        self.divergence = divergence
        self.margin = int(margin)
        self.second_order = bool(second_order) and noise != "gaussian"
        self.max_exact_entries = int(max_exact_entries)
        self.batch_evaluations = bool(batch_evaluations)
        #: independent Monte-Carlo probes averaged per step (``divergence: mc``): variance / K, K (Gaussian) or
        #: 2K (Poisson second order) evaluations besides ``f(y)``
        self.probes = int(probes)
        #: finite difference of the first-order Monte-Carlo divergence: ``f(y+τω) - f(y)`` (2 evaluations) or
        #: ``f(y+τω) - f(y-τω)`` (3; the second-order Poisson estimate is central already)
        self.difference = difference
        self._step_checked = False

    @property
    def evaluations_per_step(self) -> int:  # type: ignore[override]
        if self.divergence == "exact":
            return 1
        return 1 + (2 if self.second_order or self.difference == "central" else 1) * self.probes

    def check(self, physics: Physics) -> None:
        kind = physics.noise.kind
        if kind != self.noise:
            hint = {
                "none": "the physics has no noise level (sigma/gain); SURE needs the noise parameters — "
                        "use UNSURE when they are unknown",
                "unknown": "the noise model is unknown (physics.noise: unknown); declare it, e.g. "
                           "{name: gaussian, args: {sigma: auto}} to estimate the level from the data, or use a "
                           "loss that needs no noise model (unsure, splitting)",
                "colored_gaussian": "coloured Gaussian noise is not supported by SURE; use UNSURE(variant='colored')",
                "gamma": "Gamma noise is not supported by SURE; use R2R(noise='gamma')",
                "custom": "a custom noise model declares no family SURE is exact for (its class attribute "
                          "kind is 'custom'); use UNSURE",
            }.get(kind, f"build SURE(noise={kind!r}) instead")
            raise LossConfigError(f"SURE(noise={self.noise!r}) got {type(physics.noise).__name__} "
                                  f"({kind}) noise: {hint}")

    def _check_step(self, physics: Physics, y: Tensor) -> None:
        """Warn (once per loss object) when the Monte-Carlo step is large against the noise the loss sees."""
        self._step_checked = True
        if self.tau is None or self.divergence != "mc":
            return
        if self.noise == "gaussian":
            level, name = _smallest_sigma(physics.noise.sigma), "σ"
        else:
            level, name = float(self._noise_level(physics, y)), "the noise level sqrt(mean(γ y + σ²))"
        if level is not None and level > 0 and self.tau > level / 4:
            warnings.warn(f"SURE: tau = {self.tau:g} is {self.tau / level:.2f} × {name} (= {level:.4g} in the units "
                          f"SURE works in, after the data's normalisation if any): a network can learn to fool the "
                          f"finite-difference derivatives at that scale (its SURE falls below the true risk and it "
                          f"keeps the noise); use tau: {level / self._auto_divisor:.2g} (1/{self._auto_divisor} of "
                          f"it) or tau: auto", stacklevel=3)

    @property
    def _auto_divisor(self) -> int:
        return AUTO_TAU_DIVISOR_SECOND_ORDER if self.second_order else AUTO_TAU_DIVISOR

    def _noise_level(self, physics: Physics, y: Tensor) -> Tensor:
        """Poisson(–Gaussian): the root-mean-square noise level ``sqrt(mean(γ y + σ²))`` over the measured
        entries of ``y`` (a 0-dim tensor)."""
        w = self._weights(y.detach().clamp(min=0), physics)[1]
        measured = physics.measurement_mask(y)
        count = w.numel() if measured is None else measured.to(y).expand_as(y).sum().clamp(min=1)
        return (w.sum() / count).sqrt()

    def step_size(self, physics: Physics, y: Tensor | None = None) -> float | Tensor:
        """The finite-difference step ``τ``: the given one, or for ``tau: auto`` ``σ_noise / 10``
        (``AUTO_TAU_DIVISOR``; ``/ 6`` for the second-order Poisson estimate, ``AUTO_TAU_DIVISOR_SECOND_ORDER``):
        Gaussian ``σ_noise = σ``, the smallest of the batch's; Poisson(–Gaussian) ``σ_noise = sqrt(mean(γ y + σ²))``
        over the measured entries of the batch ``y`` (the root-mean-square noise level). A 0-dim tensor when it
        is computed from tensors (no host sync)."""
        if self.tau is not None:
            return self.tau
        if self.noise != "gaussian":
            if y is None:
                raise LossConfigError(f"SURE(noise={self.noise!r}, tau='auto') needs the measurements: its step "
                                      f"follows their noise level sqrt(mean(γ y + σ²))")
            return self._noise_level(physics, y) / self._auto_divisor
        sigma: object = physics.noise.sigma
        if sigma is None:
            raise LossConfigError(f"SURE(tau='auto') needs the noise level σ of the physics (it sets "
                                  f"τ = σ/{self._auto_divisor})")
        if isinstance(sigma, Tensor):
            return sigma.detach().min() / AUTO_TAU_DIVISOR
        return float(cast(float, sigma)) / AUTO_TAU_DIVISOR

    def _weights(self, y: Tensor, physics: Physics) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per-entry ``(c, w, v)`` of the module docstring, shape of ``y``; 0 on unmeasured entries."""
        noise = physics.noise
        zero = torch.zeros((), dtype=y.dtype, device=y.device)
        s2 = rng.as_per_sample(noise.sigma, y, "sigma") ** 2 if noise.sigma is not None else zero
        measured = physics.measurement_mask(y)
        measured = torch.ones_like(y) if measured is None else measured.to(y).expand_as(y)
        if self.noise == "gaussian":
            c = s2 * measured
            return c, c, None
        g = rng.as_per_sample(noise.gain, y, "gain")
        w = (g * y + s2) * measured
        v = (g * g * y / 2 + g * s2) * measured if self.second_order else None
        return w, w, v

    def forward(self, y: Tensor, physics: Physics, model: Reconstructor, x: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        self.check(physics)
        if not self._step_checked:
            self._check_step(physics, y)

        def h(v: Tensor) -> Tensor:
            return physics.A(model(v, physics))

        tau = self.step_size(physics, y)
        c, w, v = self._weights(y, physics)
        if self.margin:
            m = border_mask(y, self.margin)
            c, w = c * m, w * m
            v = v * m if v is not None else None
            count = m.sum() * (y[:, ..., 0, 0].numel())
        else:
            m = None
            count = torch.tensor(float(y.numel()), dtype=y.dtype, device=y.device)

        if self.divergence == "exact":
            entries = y[0].numel()
            if entries > self.max_exact_entries:
                raise ValueError(
                    f"SURE(divergence='exact') needs one double-backward pass per measurement entry: "
                    f"the measurement has {entries} entries per sample {tuple(y.shape[1:])}, above "
                    f"max_exact_entries={self.max_exact_entries}; use divergence='mc' (or raise "
                    f"max_exact_entries if the time is acceptable)")
            hy = h(y)
            div = exact_weighted_derivatives(h, y, w.expand_as(y), None if v is None else v.expand_as(y)).sum()
        elif v is None and self.probes == 1 and self.batch_evaluations and _can_batch(model, y, physics):
            omega = draw_probe(y, self.probe, generator)
            if self.difference == "central":
                hy, hp, hm = _evaluate_together(model, y, y + tau * omega, y - tau * omega, physics=physics)
                div = ((w * omega) * (hp - hm)).sum() / (2 * tau)
            else:
                hy, hp = _evaluate_together(model, y, y + tau * omega, physics=physics)
                div = ((w * omega) * (hp - hy)).sum() / tau
        elif v is None:
            hy = h(y)
            div = torch.stack([mc_divergence(h, y, tau, generator, weight=w, fy=hy, probe=self.probe,
                                             central=self.difference == "central").sum()
                               for _ in range(self.probes)]).mean()
        else:
            hy = h(y)
            terms = []
            for _ in range(self.probes):
                d1, d2 = mc_second_order_derivatives(h, y, tau, generator, w, v, fy=hy)
                terms.append((d1 - d2).sum())
            div = torch.stack(terms).mean()
        res = (y - hy) ** 2
        if m is not None:
            res = res * m
        return (res.sum() - c.sum() + 2 * div) / count

    def extra_repr(self) -> str:
        tau = "auto" if self.tau is None else self.tau
        return (f"noise={self.noise!r}, tau={tau}, divergence={self.divergence!r}, "
                f"batch_evaluations={self.batch_evaluations}, "
                + (f"probes={self.probes}, " if self.probes != 1 else "")
                + (f"probe={self.probe!r}, " if self.probe != "gaussian" else "")
                + (f"difference={self.difference!r}, " if self.difference != "forward" else "") +
                f"margin={self.margin}, second_order={self.second_order}"
                + (f", max_exact_entries={self.max_exact_entries}" if self.divergence == "exact" else ""))
