"""The operator abstraction: ``y = N(A(x))``.

A ``Physics`` is a small ``nn.Module`` holding

* the forward map ``A`` (and, for ``LinearPhysics``, ``A_adjoint`` and ``A_dagger``),
* a noise model ``noise`` (``selfinv.physics.noise``), acting on the entries
  that ``measurement_mask(y)`` says are measured (all of them by default),
* its *per-sample parameters* (masks, kernels, angles...), each a tensor whose
  leading dimension is the batch (or 1 when shared by the whole batch).

Per-sample parameters are never mutated in place: ``with_params(**p)`` returns a
new physics sharing everything else, ``sample_params(B, generator)`` draws fresh
ones from the operator's own distribution (e.g. a new Bernoulli mask per
sample), and ``resample`` combines both. This is what data sets store next to
``y``, what MOI draws ``A'`` from and what DDP ranks draw independently.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from selfinv.physics.noise import NoiseModel, NoNoise

#: a physics type: copies (``with_params``, ``with_noise``...) keep the type of the original
_P = TypeVar("_P", bound="Physics")


#: reduced-precision floating dtypes: operators compute in float32 instead
_REDUCED = (torch.float16, torch.bfloat16)
#: the maps computed at full precision whatever autocast says (see ``Physics.__init_subclass__``)
_MAPS = ("A", "A_adjoint", "A_dagger", "A_adjoint_A")


def _full_precision(method: Callable) -> Callable:
    """``method(self, t, ...)`` run outside autocast, a half-precision ``t`` computed in float32."""

    @functools.wraps(method)
    def wrapper(self: "Physics", t: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not isinstance(t, Tensor):
            return method(self, t, *args, **kwargs)
        reduced = t.dtype in _REDUCED
        if not reduced and not torch.is_autocast_enabled(t.device.type):
            return method(self, t, *args, **kwargs)
        with torch.autocast(t.device.type, enabled=False):
            return method(self, t.float() if reduced else t, *args, **kwargs)

    wrapper.__full_precision__ = True  # type: ignore[attr-defined]
    return wrapper


class Physics(nn.Module):
    """A (possibly non-linear) measurement process ``y = noise(A(x))``.

    The maps ``A``, ``A_adjoint``, ``A_dagger`` and ``A_adjoint_A`` of every subclass are computed at full
    precision (float32 or the input's float64) even inside ``torch.autocast`` and for half-precision inputs:
    mixed precision speeds up the *network*, while the physics — sparse projections, FFTs, the finite
    differences of SURE through ``A`` — keeps its accuracy (and sparse kernels have no half-precision form).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _MAPS:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "__full_precision__", False):
                setattr(cls, name, _full_precision(method))

    #: names of the per-sample parameters (tensors with a leading batch dimension)
    param_names: tuple[str, ...] = ()
    #: the measurement is an image of the scene (denoising, blur, downsampling): pixel-wise noise
    #: estimators, random patches and tiled prediction apply to it
    image_domain: ClassVar[bool] = False
    #: images are complex, stored as 2 real channels (real, imaginary): MRI
    complex_image: ClassVar[bool] = False
    #: measurements are multi-coil k-space (``(2C, H, W)``): a multi-coil file is read coil by coil, with its
    #: coil sensitivities, instead of being compressed to one virtual coil (``MultiCoilMRI``)
    keeps_coils: ClassVar[bool] = False

    def __init__(self, noise: NoiseModel | None = None):
        super().__init__()
        self.noise = noise if noise is not None else NoNoise()

    # -- the maps -----------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def A_dagger(self, y: Tensor) -> Tensor:
        """An (approximate) inverse; linear operators give the pseudo-inverse."""
        raise NotImplementedError(f"{type(self).__name__} has no A_dagger")

    def restrict_to_field_of_view(self, x: Tensor) -> Tensor:
        """``x`` with 0 where no measurement of this operator sees the image (the pixels outside every receive
        coil's sensitivity, ``MultiCoilMRI``): the identity for most operators. Reconstructors apply it to their
        output: nothing constrains a network there, and 0 is the minimum-norm value (what ``A⁺`` gives)."""
        return x

    def image_channels(self, measurement_channels: int) -> int:
        """The channels of the image behind a measurement with ``measurement_channels`` channels (what the
        network takes): the same, unless the operator changes them (``MultiCoilMRI``: 2 for ``2C``)."""
        return int(measurement_channels)

    def commutes_with_dihedral(self) -> bool:
        """Whether ``A T = T A`` for the 8 flips / 90° rotations ``T`` of the image grid (the same ``T`` acting on
        the measurement grid) and the noise law is invariant under them (``NoiseModel.dihedral_invariant``). Then
        ``T y`` is a measurement of ``T x`` like any other, and ``selfinv.models.ensemble.dihedral_ensemble``
        may average a reconstructor over the 8 transforms. False unless an operator declares it."""
        return False

    def image_estimate(self, y: Tensor) -> Tensor:
        """A quick image-domain estimate of the scene of ``y``, whose values set the scale of a user's data (the
        normalisation fitted at training, the units check of ``predict``): ``A_dagger(y)``, unless the
        pseudo-inverse amplifies noise (``MultiCoilMRI``: ``Aᵀ y``, the coil-combined zero-filled image)."""
        return self.A_dagger(y)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Simulate a measurement ``y = noise(A(x))``."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise TypeError(f"{type(self).__name__} simulates measurements of floating-point images, got {got}; "
                            f"convert with x.float()")
        return self.noise(self.A(x), generator=generator)

    def measurement_mask(self, y: Tensor) -> Tensor | None:
        """Which entries of ``y`` are measured: ``None`` when all of them are (the default).

        Operators whose measurements keep a fixed layout with zeros where nothing is
        measured (inpainting, Cartesian MRI) return a 0/1 tensor broadcastable to ``y``:
        1 where the entry carries a measurement (and its noise), 0 where it is identically
        zero by construction. Losses that count the noise per entry (SURE's ``Σ σ²``) use it.
        """
        return None

    # -- per-sample parameters -----------------------------------------------------
    def params(self) -> dict[str, Tensor]:
        """The current per-sample parameters, by name."""
        return {n: getattr(self, n) for n in self.param_names}

    def with_params(self: _P, **params: Tensor) -> _P:
        """A copy of this physics with some per-sample parameters replaced.

        Only names in ``param_names`` are accepted; anything else is an error
        (nothing is silently ignored).
        """
        unknown = set(params) - set(self.param_names)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.with_params got unknown parameter(s) {sorted(unknown)}; "
                f"expected a subset of {list(self.param_names)}"
            )
        new = self._shallow_copy()
        for name, value in params.items():
            new._set_param(name, value)
        return new

    def measurement_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape ``(C', H', W')`` of the measurement of an image of ``image_shape`` ``(C, H, W)`` (the same
        shape unless the operator changes it)."""
        return tuple(image_shape)

    def for_measurement(self, shape: tuple[int, ...]) -> "Physics":
        """This operator for one measurement of ``shape`` ``(C, H, W)``: itself when it takes measurements of
        that shape (operators without an image size take any), else the same operator (same geometry, same
        parameter distribution, same noise) rebuilt for the image size those measurements come from.
        A shape that no image size explains is a ``ValueError`` naming both shapes."""
        return self

    def with_noise(self: _P, noise: NoiseModel) -> _P:
        """A copy with another noise model (same operator and parameters)."""
        new = self._shallow_copy()
        new.noise = noise
        return new

    def sample_params(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, Tensor]:
        """Draw fresh per-sample parameters for ``batch_size`` samples.

        Deterministic operators return ``{}``.
        """
        return {}

    def resample(self: _P, batch_size: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> _P:
        """A copy with freshly drawn per-sample parameters (a new operator ``A'``)."""
        return self.with_params(**self.sample_params(batch_size, generator, device))

    @property
    def is_random(self) -> bool:
        """Whether ``sample_params`` draws anything."""
        return len(self.param_names) > 0

    # -- helpers for subclasses ----------------------------------------------------
    def _set_param(self, name: str, value: Tensor) -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"parameter '{name}' must be a tensor, got {type(value).__name__}")
        self.register_buffer(name, value, persistent=False)

    def _param_for(self, name: str, t: Tensor, who: str) -> Tensor:
        """Per-sample parameter ``name`` on ``t``'s device and dtype, checked to have a
        leading dimension of 1 or ``t``'s batch size."""
        p = getattr(self, name)
        if p.shape[0] not in (1, t.shape[0]):
            raise ValueError(
                f"{who}: the {name} has {p.shape[0]} samples but the batch has {t.shape[0]}; "
                f"expected a {name} of leading dimension {t.shape[0]} or 1"
            )
        return p.to(device=t.device, dtype=t.dtype)

    def _shallow_copy(self: _P) -> _P:
        new = copy.copy(self)
        new._buffers = dict(self._buffers)
        new._modules = dict(self._modules)
        new._parameters = dict(self._parameters)
        return new

    @staticmethod
    def _check_image(x: Tensor, who: str, channels: int | None = None,
                     size: tuple[int, int] | None = None) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"{who} expects a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{who} expects a floating-point tensor, got dtype {x.dtype}")
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{who} expects {channels} channel(s), got shape {tuple(x.shape)}")
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            raise ValueError(f"{who} expects images of size {tuple(size)}, got shape {tuple(x.shape)}")


class LinearPhysics(Physics):
    """A linear operator ``A`` with adjoint ``A_adjoint`` and pseudo-inverse ``A_dagger``.

    ``A_dagger`` defaults to the minimum-norm least-squares solution by conjugate
    gradient on the normal equations ``Aᵀ A x = Aᵀ y`` started at 0 (CGLS
    iterates stay in the row space, so the limit is ``A⁺ y``). Subclasses with a
    closed form override it.
    """

    #: conjugate-gradient settings used by the default ``A_dagger``
    cg_max_iter: int = 100
    cg_tol: float = 1e-6

    def A_adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def A_adjoint_A(self, x: Tensor) -> Tensor:
        """The normal operator ``Aᵀ A``."""
        return self.A_adjoint(self.A(x))

    def A_dagger(self, y: Tensor) -> Tensor:
        return conjugate_gradient(self.A_adjoint_A, self.A_adjoint(y),
                                  max_iter=self.cg_max_iter, tol=self.cg_tol)

    def adjointness_error(self, x: Tensor, y: Tensor) -> float:
        """Relative error ``|<A x, y> - <x, Aᵀ y>| / (|A x| |y|)``; 0 for an exact adjoint."""
        ax = self.A(x)
        aty = self.A_adjoint(y)
        lhs = (ax * y).sum()
        rhs = (x * aty).sum()
        scale = ax.norm() * y.norm() + torch.finfo(x.dtype).tiny
        return float((lhs - rhs).abs() / scale)

    def norm(self, x_shape: tuple[int, ...], n_iter: int = 50, generator: torch.Generator | None = None,
             device=None, dtype=torch.float32) -> float:
        """Spectral norm ``||A||_2`` by power iteration on ``Aᵀ A``."""
        x = torch.randn(x_shape, generator=generator, device=device, dtype=dtype)
        x = x / x.norm()
        lam = torch.zeros(())
        for _ in range(n_iter):
            z = self.A_adjoint_A(x)
            lam = (x * z).sum()
            x = z / (z.norm() + 1e-30)
        return float(lam.abs().sqrt())


def binary_mask(mask: Tensor, who: str) -> Tensor:
    """``mask`` as a floating tensor, checked to hold only 0 and 1 (``who`` names the operator)."""
    if not mask.is_floating_point():
        mask = mask.float()
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{who} mask must contain only 0 and 1")
    return mask


def _bdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample inner products, shape (B, 1, ..., 1)."""
    return (a * b).flatten(1).sum(1).reshape((-1,) + (1,) * (a.ndim - 1))


def conjugate_gradient(
    apply_op: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> Tensor:
    """Solve ``M x = b`` for a symmetric positive semi-definite ``M`` (per sample).

    Each sample of the batch has its own step sizes, so per-sample operators
    converge independently. Stops when every residual ``||r|| <= tol ||b||``.
    Hestenes & Stiefel (1952).
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_op(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = _bdot(r, r)
    bnorm2 = _bdot(b, b).clamp_min(torch.finfo(b.dtype).tiny)
    tiny = torch.finfo(b.dtype).tiny
    for _ in range(max_iter):
        # Converged samples are frozen: on a singular normal operator, further
        # round-off steps would drift them away from the minimum-norm solution.
        active = rs > (tol**2) * bnorm2
        if not bool(active.any()):
            break
        mp = apply_op(p)
        denom = _bdot(p, mp)
        ok = active & (denom.abs() > tiny)
        alpha = torch.where(ok, rs / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(denom))
        x = x + alpha * p
        r = r - alpha * mp
        rs_new = _bdot(r, r)
        beta = torch.where(ok, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs))
        p = torch.where(ok, r + beta * p, p)
        rs = torch.where(ok, rs_new, rs)
    return x


class Denoising(LinearPhysics):
    """``A = I``: ``y = noise(x)``."""

    image_domain: ClassVar[bool] = True

    def commutes_with_dihedral(self) -> bool:
        return self.noise.dihedral_invariant()

    def A(self, x: Tensor) -> Tensor:
        return x

    def A_adjoint(self, y: Tensor) -> Tensor:
        return y

    def A_dagger(self, y: Tensor) -> Tensor:
        return y
