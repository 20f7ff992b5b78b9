"""One way to load a trained run from a checkpoint: network, physics, loss, config and units.

``load_trained(path)`` reads a checkpoint written by ``selfinv fit`` safely
(``weights_only=True``, ``selfinv.training.checkpoint.read_checkpoint``), rebuilds
the run from the config stored in it (plain data, validated like any config),
loads the weights strictly and refuses non-finite ones (a diverged run). Every
command that uses a trained network — ``predict``, ``finetune``, ``validate``, the
demo and the benchmarks — goes through it.

Example::

    >>> run = load_trained("runs/sure/checkpoints/last.ckpt")      # doctest: +SKIP
    >>> x = run.module(run.normalization.apply(y), run.module.physics)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from selfinv.config import ConfigError, RunConfig, from_dict
from selfinv.data.normalization import Normalization
from selfinv.training.checkpoint import CheckpointError, read_checkpoint


@dataclass
class TrainedRun:
    """A trained module (in eval mode) with the config and the normalisation of its training data."""

    module: Any  # SelfSupervisedModule
    config: RunConfig
    normalization: Normalization
    checkpoint: dict
    path: str


def load_trained(path: str | os.PathLike, map_location: Any = "cpu") -> TrainedRun:
    """Load the run stored in the checkpoint ``path`` (see the module docstring)."""
    from selfinv.training.engine import build_module

    ckpt = read_checkpoint(path, map_location=map_location)
    hp = ckpt["hyper_parameters"]
    try:
        cfg = from_dict(hp["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: the run config stored in the checkpoint is not valid ({e})") from None
    try:
        normalization = Normalization.from_dict(hp.get("normalization"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the normalisation stored in the checkpoint is not valid ({e})") from None
    module = build_module(cfg, normalization=normalization)
    state = ckpt["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state).__name__}, not a mapping of weights")
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).split("\n")[1].strip() if "\n" in str(e) else str(e)
        raise CheckpointError(f"{path}: its weights do not fit the network of its own config ({first[:200]})") \
            from None
    bad = sum(int((~torch.isfinite(v)).sum()) for v in state.values() if torch.is_tensor(v) and v.is_floating_point())
    if bad:
        total = sum(v.numel() for v in state.values() if torch.is_tensor(v) and v.is_floating_point())
        raise CheckpointError(f"{path}: {bad} of {total} weights are not finite (NaN/inf): the run diverged before "
                              f"this checkpoint; use an earlier one")
    module.eval()
    return TrainedRun(module, cfg, normalization, ckpt, str(path))
