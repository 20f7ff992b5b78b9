"""Resuming a run: which checkpoint, whether it belongs to this run, and what a killed run left behind.

``selfinv fit --resume last|CKPT`` continues the run stored in the checkpoint: weights,
optimiser moments, schedulers, RNG and loss-generator states, the data order (mid-epoch
position included, see ``MeasurementDataModule.state_dict``) and the logs (appended).
Extending the budget on resume (a larger ``trainer.max_steps``) is allowed; a learning-rate
schedule over the run's length (``warmup_cosine``, ``cosine``) then follows the new length
from the resumed step on.

Resuming is only meaningful when the configuration describes the **same problem**: resuming
a SURE σ = 0.1 run with an R2R σ = 0.3 config would silently train a different objective
on top of the old state. So the loss, physics, noise model and network of the config
must equal those stored in the checkpoint; otherwise ``ResumeMismatch`` lists the
differences. ``--resume-weights-only`` takes the network weights alone and starts a new
run (step 0, fresh optimiser) with the new configuration.

Example::

    >>> config_differences({"losses": [{"name": "sure"}]}, {"losses": [{"name": "r2r"}]})
    ["losses: [{'name': 'sure'}] in the checkpoint, [{'name': 'r2r'}] now"]
"""

from __future__ import annotations

import os
from typing import Any

#: config sections that define the problem being trained (must not change across a resume)
PROBLEM_SECTIONS = (("physics",), ("losses",), ("model",))


class ResumeMismatch(ValueError):
    """The checkpoint was written by a run with another loss, physics, noise model or network."""


def resolve_resume(resume: str | None, output_dir: str) -> str | None:
    """``'last'`` -> ``<output_dir>/checkpoints/last.ckpt``; a path is checked to exist."""
    if resume is None:
        return None
    if resume == "last":
        path = os.path.join(output_dir, "checkpoints", "last.ckpt")
        if not os.path.exists(path):
            raise FileNotFoundError(f"--resume last: no checkpoint at {path} (has this run saved one yet? "
                                    f"check --trainer.output_dir)")
        return path
    if not os.path.exists(resume):
        raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
    return resume


def _section(cfg: dict, path: tuple[str, ...]) -> Any:
    node: Any = cfg
    for p in path:
        node = node.get(p) if isinstance(node, dict) else None
    return node


def config_differences(stored: dict, current: dict) -> list[str]:
    """The problem-defining sections (``PROBLEM_SECTIONS``) that differ between two plain configs."""
    out = []
    for path in PROBLEM_SECTIONS:
        a, b = _section(stored, path), _section(current, path)
        if a != b:
            out.extend(_diff(a, b, ".".join(path)))
    return out


def _diff(a: Any, b: Any, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.extend(_diff(a.get(k), b.get(k), f"{where}.{k}"))
        return out
    return [f"{where}: {a!r} in the checkpoint, {b!r} now"]


def check_same_problem(stored: dict, current: dict, checkpoint: str, flag: str = "--resume") -> None:
    """Raise ``ResumeMismatch`` naming the differences if ``current`` describes another problem than the
    checkpoint's config (``flag`` names the option the checkpoint came from)."""
    diffs = config_differences(stored, current)
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        advice = ("Resume with the checkpoint's own config, or use --resume-weights-only to start a new run from "
                  "its network weights" if flag == "--resume" else "Use the config the checkpoint was trained with")
        raise ResumeMismatch(f"{flag} {checkpoint}: the checkpoint was trained with another setup ({shown}). "
                             f"{advice}")
