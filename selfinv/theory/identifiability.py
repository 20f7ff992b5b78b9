"""Can a reconstruction be learned from these measurements alone?  The rank conditions.

Without ground truth, a network can only learn what some operator sees. With
operators ``A_1 … A_K`` (a random operator distribution) and a group
``{T_g}`` leaving the image set invariant, learning is possible only if

    rank( E_{k,g} T_gᵀ A_kᵀ A_k T_g ) = n                                   (1)

(Tachella, Chen & Davies, NeurIPS 2022 and JMLR 2023; Part 3–4 of the
tutorial), which needs ``m ≥ n / (K |G|)``. Without a group (1) reads
``rank(E_k A_kᵀ A_k) = n``. It is a *necessary* condition.

``identifiability`` builds the ``n × n`` matrix of (1) on a small image (``n ≤ ~1024``)
from the dense matrices ``M_{k,g} = A_k T_g`` (``selfinv.theory.operator_matrix``).
Its eigenvalues are the squared singular values ``s_1 ≥ … ≥ s_n`` of the averaged
operator; the verdict (``report.level``) has three levels:

* ``"not learnable"``: ``s_n < rtol · s_1`` (default ``rtol = 1e-5``), numerically
  rank deficient. The eigenvalues are computed in float64 from the Gram matrix, whose
  rounding is ``~ n u λ_1`` (``u = 1.1e-16``): an exactly null direction comes out
  with ``s ≲ sqrt(n u) s_1 ≈ 1e-7 s_1`` (measured on inpainting, MRI, compressed sensing
  and box blur, ``n ≤ 512``); ``1e-5`` is 100 times above that floor.
* ``"numerically unstable"``: full rank, but the condition number
  ``κ = s_1 / s_n > cond_threshold`` (default ``1e4``). The weakest direction is seen
  ``κ`` times more faintly than the strongest, so a squared-error loss sees it at
  ``1/κ² ≤ 1e-8`` relative to it: below the float32 unit round-off (``6e-8``) in which
  networks are trained, so no measurement-domain loss can tell reconstructions apart
  along it; noise is amplified by ``κ`` there. With noise of relative level ``σ``,
  directions with ``s_i < σ s_1`` are lost already: the report counts the singular
  values below ``1e-1 … 1e-6`` of ``s_1`` so this can be read off for any noise level.
* ``"learnable"`` (in principle: the condition is necessary, not sufficient) otherwise.

It also tests whether each ``A_k`` is equivariant to the group
(``selfinv.theory.equivariance``), which makes the group useless (e.g. blur and shifts).

Random draws (the operators when ``n_operators`` is given, the elements of a group
without ``elements()``) come from ``generator``, which defaults to a generator seeded
with 0: repeated calls give the same report.

Example:
    >>> from selfinv.physics import Inpainting
    >>> report = identifiability(Inpainting((1, 8, 8), 0.5), img_size=(1, 8, 8), n_operators=30,
    ...                          generator=torch.Generator().manual_seed(0))
    >>> report.level
    'learnable'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from selfinv.physics.base import Physics
from selfinv.theory.equivariance import equivariance_residual, null_space_basis
from selfinv.theory.operator_matrix import operator_matrix, physics_in_dtype

Verdict = Literal["learnable", "numerically unstable", "not learnable"]

#: relative thresholds ``t`` at which the report counts the singular values below ``t · s_max``
SPECTRUM_THRESHOLDS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


@dataclass(frozen=True)
class SpectrumSummary:
    """Singular values ``s_1 ≥ … ≥ s_n`` of the averaged operator (square roots of the eigenvalues
    of ``E_{k,g} T_gᵀ A_kᵀ A_k T_g``), summarised."""

    s_max: float
    s_min: float
    condition_number: float  # s_max / s_min (inf when s_min = 0)
    below: dict[float, int]  # t -> number of singular values below t · s_max

    @classmethod
    def from_singular_values(cls, sv: Tensor,
                             thresholds: Sequence[float] = SPECTRUM_THRESHOLDS) -> SpectrumSummary:
        s_max = float(sv.max()) if sv.numel() else 0.0
        s_min = float(sv.min()) if sv.numel() else 0.0
        cond = s_max / s_min if s_min > 0 else math.inf
        return cls(s_max=s_max, s_min=s_min, condition_number=cond,
                   below={float(t): int((sv < t * s_max).sum()) for t in thresholds})

    def __str__(self) -> str:
        counts = ", ".join(f"{t:.0e}: {c}" for t, c in self.below.items())
        return (f"s_max {self.s_max:.3e}, s_min {self.s_min:.3e}, condition number "
                f"{self.condition_number:.3e}; number below t·s_max: {counts}")


@dataclass
class IdentifiabilityReport:
    """Result of ``identifiability``; ``str(report)`` is a readable summary."""

    physics: str
    transform: str | None
    image_shape: tuple[int, int, int]
    n: int  # unknowns (C H W)
    measurement_size: int  # real entries of y
    m: int  # smallest rank of a single operator (effective number of measurements)
    m_max: int
    n_operators: int  # K
    group_size: int  # |G| (1 without transform)
    group_exact: bool  # True: all elements of a finite group; False: sampled elements
    rank: int  # rank of E_{k,g} T_gᵀ A_kᵀ A_k T_g
    rank_without_transform: int  # rank of E_k A_kᵀ A_k
    rtol: float
    smallest_singular_ratio: float  # s_min / s_max over the retained singular values
    equivariant: bool | None  # None: no transform, or every A_k is injective
    equivariance_residual: float | None
    singular_values: Tensor = field(repr=False, default_factory=lambda: torch.zeros(0))
    spectrum: SpectrumSummary | None = None  # of all n singular values of the averaged operator
    cond_threshold: float = 1e4
    operators_drawn: bool = False  # True: the K operators were drawn with the generator

    @property
    def null_space_dim(self) -> int:
        return self.n - self.rank

    @property
    def condition_number(self) -> float:
        """``s_max / s_min`` over all ``n`` singular values (``inf`` if the smallest is 0)."""
        if self.spectrum is not None:
            return self.spectrum.condition_number
        return math.inf if self.rank < self.n else 1.0 / self.smallest_singular_ratio

    @property
    def level(self) -> Verdict:
        """``"not learnable"`` (rank < n at ``rtol``), ``"numerically unstable"`` (full rank but
        condition number > ``cond_threshold``) or ``"learnable"`` (see the module docstring)."""
        if self.rank < self.n:
            return "not learnable"
        if self.condition_number > self.cond_threshold:
            return "numerically unstable"
        return "learnable"

    @property
    def learnable(self) -> bool:
        """``level == "learnable"``."""
        return self.level == "learnable"

    @property
    def bound(self) -> float:
        """The necessary count ``n / (K |G|)``."""
        return self.n / (self.n_operators * self.group_size)

    @property
    def bound_satisfied(self) -> bool:
        return self.m_max >= self.bound

    @property
    def identifiable(self) -> bool:
        """The rank condition at ``rtol`` (rank = n); ``level`` also weighs the conditioning."""
        return self.rank == self.n

    @property
    def verdict(self) -> str:
        if self.level == "learnable":
            return (f"LEARNABLE in principle: the rank condition holds (rank = n) and the condition number "
                    f"{self.condition_number:.1e} is below {self.cond_threshold:.0e}. It is necessary, not "
                    f"sufficient: the loss must exploit these operators/symmetries (MOI, EI, SSDU...).")
        if self.level == "numerically unstable":
            faint = self.spectrum.below.get(1e-2) if self.spectrum is not None else None
            lines = [(f"NUMERICALLY UNSTABLE: full rank, but the condition number {self.condition_number:.1e} "
                      f"exceeds {self.cond_threshold:.0e}:"),
                     ("the weakest directions are seen that many times more faintly than the strongest"
                      + (f" ({faint} singular values below 1e-2 s_max)" if faint is not None else "") + ";"),
                     ("noise and float32 rounding along them are amplified as much, so in practice they are "
                      "not learned. More operators or another group would help.")]
            if self.transform is not None and self.rank_without_transform < self.n:
                lines.append(f"Without the transforms the rank is {self.rank_without_transform} / {self.n}: "
                             "the group fills the null space only faintly.")
            return "\n".join(lines)
        lines = [(f"NOT LEARNABLE from these measurements: a {self.null_space_dim}-dimensional subspace "
                  f"is never observed (singular values below {self.rtol:g} s_max); no self-supervised "
                  f"loss can recover it.")]
        if not self.bound_satisfied:
            lines.append(f"Too few measurements: m = {self.m_max} < n/(K|G|) = {self.bound:.1f}.")
        if self.equivariant:
            lines.append("The operator is equivariant to the group (A T_g = T̃_g A): the transforms add no "
                         "information, equivariant imaging cannot help; use another group (e.g. scalings "
                         "for blur) or more operators.")
        elif self.transform is not None and self.rank == self.rank_without_transform:
            lines.append("The transforms did not increase the rank.")
        return "\n".join(lines)

    def __str__(self) -> str:
        C, H, W = self.image_shape
        eq = ("n/a" if self.equivariant is None else
              f"{'yes' if self.equivariant else 'no'} (residual {self.equivariance_residual:.2e})")
        group = "none" if self.transform is None else (
            f"{self.transform}, |G| = {self.group_size} ({'all elements' if self.group_exact else 'sampled'})")
        rows = [
            "Identifiability report",
            f"  physics             : {self.physics}",
            f"  image (C, H, W)     : ({C}, {H}, {W})   n = {self.n}",
            f"  measurements        : m = {self.m}" + (f"..{self.m_max}" if self.m_max != self.m else "")
            + f" (rank of one operator; y has {self.measurement_size} entries)",
            f"  operators K         : {self.n_operators}"
            + (" (drawn with the generator)" if self.operators_drawn else " (the physics' own parameters)"),
            f"  transform group     : {group}",
            f"  bound n/(K|G|)      : {self.bound:.1f}  ({'met' if self.bound_satisfied else 'NOT met'})",
            f"  rank                : {self.rank} / {self.n}   (without transforms: {self.rank_without_transform})",
            f"  null-space dim      : {self.null_space_dim}",
            f"  s_min/s_max kept    : {self.smallest_singular_ratio:.2e}   (threshold rtol = {self.rtol:g})",
            ("  # s < t·s_max       : " + ", ".join(f"t={t:.0e}: {c}" for t, c in self.spectrum.below.items()))
            if self.spectrum is not None else "",
            (f"  condition number    : {self.condition_number:.2e}   (numerically unstable above "
             f"{self.cond_threshold:.0e})"),
            f"  A equivariant to G  : {eq}",
            f"  verdict             : {self.level}",
            " " * 24 + self.verdict.replace("\n", "\n" + " " * 24),
        ]
        return "\n".join(r for r in rows if r)


def identifiability(
    physics: Physics,
    transform: nn.Module | None = None,
    img_size: Sequence[int] | None = None,
    n_operators: int | None = None,
    generator: torch.Generator | None = None,
    *,
    operators: Sequence[Physics] | None = None,
    n_transforms: int = 32,
    rtol: float = 1e-5,
    cond_threshold: float = 1e4,
    equivariance_tol: float = 1e-3,
    dtype: torch.dtype = torch.float64,
    batch_size: int = 256,
) -> IdentifiabilityReport:
    """Rank of ``E_{k,g} T_gᵀ A_kᵀ A_k T_g`` on a small image, and whether ``A`` is ``G``-equivariant.

    Args:
        physics: a linear physics (only its forward map ``A`` is used).
        transform: optional group; finite groups are enumerated with ``elements(img_size)``,
            others are represented by ``n_transforms`` sampled elements.
        img_size: ``(C, H, W)`` or ``(H, W)`` (channels then probed: 1, 2, 3); default
            ``physics.img_size``. Keep ``n = C H W`` ≲ 1024.
        n_operators: ``K`` operators drawn with ``physics.resample(1, generator)`` (``K = 1``
            too: one fresh draw) for a random physics; a deterministic physics accepts only
            ``1``. ``None`` uses the physics' own parameters (one operator per leading index)
            and draws nothing.
        generator: for the operator / transform draws; ``None`` means a generator seeded with 0
            on the physics' device, so repeated calls give identical reports.
        operators: an exact finite set of operators (overrides ``n_operators``).
        n_transforms: sampled elements for a transform without ``elements()``.
        rtol: a singular value ``s`` counts in the rank if ``s > rtol · s_max`` (eigenvalues are
            computed from the Gram matrix: in float64 its rounding puts exactly null directions
            near ``1e-7 s_max``). Must be below ``1 / cond_threshold``.
        cond_threshold: a full-rank result with condition number ``s_max / s_min`` above this
            is ``"numerically unstable"`` (see the module docstring for the default ``1e4``).
        equivariance_tol: ``A`` is declared equivariant if every residual
            ``||A T_g N||_F / (||A||_2 ||N||_F) < equivariance_tol`` (``N``: null-space basis);
            the search stops at the first element above the tolerance.
        dtype: computation dtype (float64 recommended).
        batch_size: basis images per forward call.
    """
    if not 0 < rtol < 1.0 / cond_threshold:
        raise ValueError(f"rtol must be in (0, 1/cond_threshold) = (0, {1.0 / cond_threshold:g}) so that "
                         f"'not learnable' and 'numerically unstable' are ordered, got rtol={rtol:g} and "
                         f"cond_threshold={cond_threshold:g}")
    if generator is None:
        generator = torch.Generator(device=_device_of(physics)).manual_seed(0)
    ops, drawn = _operator_set(physics, n_operators, generator, operators)
    ops = [physics_in_dtype(op, dtype) for op in ops]
    device = _device_of(ops[0])
    shape = _image_shape(ops[0], img_size, dtype, device)
    n = shape[0] * shape[1] * shape[2]
    elements, exact = _group_elements(transform, shape, n_transforms, generator, device)

    basis = torch.eye(n, dtype=dtype, device=device).reshape((n,) + shape)
    gram_plain = torch.zeros(n, n, dtype=dtype, device=device)
    gram_group = torch.zeros(n, n, dtype=dtype, device=device) if transform is not None else None
    ranks: list[int] = []
    residuals: list[float] = []
    measurement_size = 0
    for op in ops:
        mat = operator_matrix(op.A, shape, dtype, device, batch_size, basis)
        measurement_size = mat.shape[0]
        gram = mat.T @ mat
        gram_plain += gram
        sv, null = null_space_basis(gram, rtol)
        ranks.append(n - null.shape[1])
        if transform is None:
            continue
        pending: list[Tensor] = []  # stacked rows, one matmul per ~4096 rows
        check_equivariance = null.shape[1] > 0
        for i, params in enumerate(elements):
            mat_g = operator_matrix(lambda x, p=params, op=op: op.A(transform.transform(x, p)),
                                    shape, dtype, device, batch_size, basis)
            pending.append(mat_g)
            if sum(t.shape[0] for t in pending) >= 4096 or i == len(elements) - 1:
                stacked = torch.cat(pending, 0)
                gram_group += stacked.T @ stacked
                pending = []
            if check_equivariance:
                residuals.append(equivariance_residual(mat_g, null, float(sv[0])))
                # one non-equivariant element settles the question (the residual reported is then
                # the first one above the tolerance, not the maximum)
                check_equivariance = residuals[-1] < equivariance_tol

    K = len(ops)
    group_size = len(elements) if transform is not None else 1
    final = gram_group / (K * group_size) if transform is not None else gram_plain / K
    sv_final, null_final = null_space_basis(final, rtol)
    rank = n - null_final.shape[1]
    rank_plain = n - null_space_basis(gram_plain / K, rtol)[1].shape[1]
    kept = sv_final[:rank]
    ratio = float(kept[-1] / kept[0]) if rank > 0 else 0.0
    if transform is None or not residuals:
        equivariant, residual = None, None
    else:
        residual = max(residuals)
        equivariant = residual < equivariance_tol
    return IdentifiabilityReport(
        physics=type(physics).__name__, transform=None if transform is None else type(transform).__name__,
        image_shape=shape, n=n, measurement_size=measurement_size, m=min(ranks), m_max=max(ranks),
        n_operators=K, group_size=group_size, group_exact=exact, rank=rank, rank_without_transform=rank_plain,
        rtol=rtol, smallest_singular_ratio=ratio, equivariant=equivariant, equivariance_residual=residual,
        singular_values=sv_final.cpu(), spectrum=SpectrumSummary.from_singular_values(sv_final.cpu()),
        cond_threshold=float(cond_threshold), operators_drawn=drawn,
    )


def _operator_set(physics: Physics, n_operators: int | None, generator,
                  operators) -> tuple[list[Physics], bool]:
    """The operators ``A_k`` and whether they were drawn with ``generator``."""
    if operators is not None:
        ops = list(operators)
        if not ops:
            raise ValueError("operators must contain at least one physics")
        return ops, False
    if n_operators is not None:
        if int(n_operators) < 1:
            raise ValueError(f"n_operators must be >= 1, got {n_operators}")
        if getattr(physics, "is_random", False):
            return [physics.resample(1, generator) for _ in range(int(n_operators))], True
        if int(n_operators) > 1:
            raise ValueError(f"n_operators={n_operators} needs an operator distribution, but "
                             f"{type(physics).__name__} is deterministic (is_random is False)")
    params = physics.params()
    leading = {v.shape[0] for v in params.values() if v.ndim > 0}
    count = max(leading) if leading else 1
    if count == 1:
        return [physics], False
    return [physics.with_params(**{k: (v[i:i + 1] if v.ndim > 0 and v.shape[0] == count else v)
                                   for k, v in params.items()}) for i in range(count)], False


def _device_of(physics: Physics) -> torch.device:
    for t in list(physics.buffers()) + list(physics.parameters()):
        return t.device
    return torch.device("cpu")


def _image_shape(physics: Physics, img_size, dtype, device) -> tuple[int, int, int]:
    size = img_size if img_size is not None else getattr(physics, "img_size", None)
    if size is None:
        raise ValueError(f"identifiability needs img_size=(C, H, W) or (H, W): {type(physics).__name__} "
                         f"has no img_size attribute")
    size = tuple(int(s) for s in size)
    if len(size) == 3:
        return size  # type: ignore[return-value]
    if len(size) != 2:
        raise ValueError(f"img_size must be (C, H, W) or (H, W), got {size}")
    first_error: Exception | None = None
    for c in (1, 2, 3):
        try:
            physics.A(torch.zeros((1, c) + size, dtype=dtype, device=device))
            return (c,) + size  # type: ignore[return-value]
        except (ValueError, RuntimeError) as err:
            first_error = first_error or err
    raise ValueError(f"could not apply {type(physics).__name__}.A to images of size {size} with 1, 2 or 3 "
                     f"channels; pass img_size=(C, H, W). First error: {first_error}")


def _group_elements(transform, shape, n_transforms, generator, device) -> tuple[list[dict], bool]:
    if transform is None:
        return [], True
    try:
        elements = transform.elements(tuple(shape[1:]))
        exact = True
    except NotImplementedError:
        elements = [transform.sample(1, generator, device) for _ in range(int(n_transforms))]
        exact = False
    return [{k: v.to(device) for k, v in p.items()} for p in elements], exact
