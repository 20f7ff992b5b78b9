"""benchmarks/anchor_train.py must train on exactly the anchor workload's data.

The anchor (/work/shared/anchor/bench_train.py) crops 64x64 patches at stride 32 of 15
scikit-image images with ``Tensor.unfold`` and adds ``0.1 * randn(generator seed 1)`` to the
stacked tensor (test: 64 crops of camera(), seed 3). The formula is re-derived here
independently from scikit-image; equality must be exact (same float32 operations).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
NAMES = ["astronaut", "brick", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
         "immunohistochemistry", "moon", "page", "retina", "rocket", "text"]


def _gray(name):
    import skimage.data as skd
    from skimage import color, img_as_float

    img = getattr(skd, name)()
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3])
    return torch.from_numpy(img_as_float(img).astype(np.float32))


def _unfold(img, stride):
    return img.unfold(0, 64, stride).unfold(1, 64, stride).reshape(-1, 1, 64, 64)


def test_anchor_data_is_the_reference_data():
    sys.path.insert(0, str(BENCH))
    import anchor_train as at

    d = at.anchor_data()
    x_train = torch.cat([_unfold(_gray(n), 32) for n in NAMES])
    x_test = _unfold(_gray("camera"), 64)
    assert x_train.shape == (4770, 1, 64, 64) and x_test.shape == (64, 1, 64, 64)
    assert torch.equal(d["x_train"], x_train) and torch.equal(d["x_test"], x_test)
    y_train = x_train + 0.1 * torch.randn(x_train.shape, generator=torch.Generator().manual_seed(1))
    y_test = x_test + 0.1 * torch.randn(x_test.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(d["y_train"], y_train) and torch.equal(d["y_test"], y_test)


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class _Identity(torch.nn.Module):
    """Stands in for the Lightning module: ``module(y, physics) = y``; evaluating costs 100 s of clock."""

    def __init__(self, clock, device):
        super().__init__()
        self.physics, self.clock, self.device = None, clock, device

    def forward(self, y, physics):
        self.clock.t += 100.0  # evaluation time must not count towards the budget
        return y


def test_training_budget_counts_only_step_time(monkeypatch):
    sys.path.insert(0, str(BENCH))
    import types

    import anchor_train as at

    clock = _Clock()
    monkeypatch.setattr(at.time, "perf_counter", clock)
    x = torch.rand(4, 1, 8, 8)
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    module = _Identity(clock, y.device)
    cb = at.TrainingBudget(y, x, budget_s=10.0, eval_every_s=4.0)
    trainer = types.SimpleNamespace(should_stop=False)
    cb.on_train_start(trainer, module)
    steps = 0
    while not trainer.should_stop:
        cb.on_train_batch_start(trainer, module, None, steps)
        clock.t += 1.5  # every step takes 1.5 s of training time
        cb.on_train_batch_end(trainer, module, torch.tensor(0.5), None, steps)
        steps += 1
    # stops at the first step reaching 10 s: 7 steps = 10.5 s; evaluations at 0, 4.5, 9.0 and the end
    assert steps == 7 and cb.steps == 7
    assert cb.elapsed == pytest.approx(10.5)
    assert [c["steps"] for c in cb.curve] == [0, 3, 6, 7]
    assert [c["train_s"] for c in cb.curve] == pytest.approx([0.0, 4.5, 9.0, 10.5])
    noisy = 10 * torch.log10(1 / (y - x).pow(2).flatten(1).mean(1)).mean().item()
    assert cb.curve[-1]["psnr"] == pytest.approx(noisy, abs=1e-4)  # identity model: PSNR of y
