"""Composition of transforms ``T = T_n ∘ ... ∘ T_1`` (``T_1`` applied first)."""

from __future__ import annotations

import itertools
from typing import Sequence, cast

import torch
from torch import Tensor, nn

from selfinv.transforms.base import Transform


class Compose(Transform):
    """Apply ``transforms`` in order; the inverse undoes them in reverse order.

    Parameters are those of each transform, prefixed by its position:
    ``{"0.shift": ..., "1.k": ...}``. ``elements()`` lists the products of the
    members' elements; that set is a group when it is closed, e.g. for
    ``Compose([Shift(), Rotate()])`` on square images (rotations map shifts to
    shifts), which gives the ``4 H W`` elements of the rotation-translation group
    of the discrete torus.
    """

    def __init__(self, transforms: Sequence[Transform]):
        super().__init__()
        transforms = list(transforms)
        if not transforms:
            raise ValueError("Compose needs at least one transform")
        bad = [type(t).__name__ for t in transforms if not isinstance(t, Transform)]
        if bad:
            raise TypeError(f"Compose expects Transform instances, got {bad}")
        self.transforms = nn.ModuleList(transforms)
        self.is_linear = all(t.is_linear for t in transforms)
        self.is_invertible = all(t.is_invertible for t in transforms)
        self.exact_inverse = all(t.exact_inverse for t in transforms)

    @property
    def _members(self) -> list[Transform]:
        """``transforms`` as the ``Transform`` list it holds (an ``nn.ModuleList`` is typed as plain modules)."""
        return cast("list[Transform]", list(self.transforms))

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> dict[str, Tensor]:
        params: dict[str, Tensor] = {}
        for i, t in enumerate(self._members):
            params.update({f"{i}.{k}": v for k, v in t.sample(batch_size, generator, device).items()})
        return params

    def _split(self, params: dict[str, Tensor], i: int) -> dict[str, Tensor]:
        prefix = f"{i}."
        return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}

    def transform(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        for i, t in enumerate(self._members):
            x = t.transform(x, self._split(params, i))
        return x

    def inverse(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        if not self.is_invertible:
            names = [type(t).__name__ for t in self._members if not t.is_invertible]
            raise NotImplementedError(f"Compose is not invertible: {names} have no inverse")
        for i, t in reversed(list(enumerate(self._members))):
            x = t.inverse(x, self._split(params, i))
        return x

    def elements(self, img_size: tuple[int, int] | None = None) -> list[dict[str, Tensor]]:
        per = [t.elements(img_size) for t in self._members]
        out = []
        for combo in itertools.product(*per):
            params: dict[str, Tensor] = {}
            for i, p in enumerate(combo):
                params.update({f"{i}.{k}": v for k, v in p.items()})
            out.append(params)
        return out
