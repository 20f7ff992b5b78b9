"""Every shipped config parses, validates, builds, and its loss runs one backward pass."""

from pathlib import Path

import numpy as np
import pytest
import torch

from selfinv.config import parse_run_config
from selfinv.training.engine import build_module

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_exist():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_trains_one_step(path, tmp_path):
    argv = ["--trainer.output_dir", str(tmp_path)]
    if "path: null" in path.read_text() and "dataset: null" in path.read_text():  # a config for the user's files
        np.save(tmp_path / "mine.npy", np.random.default_rng(0).random((2, 64, 64)).astype(np.float32))
        argv += ["--data.path", str(tmp_path / "mine.npy")]
    cfg = parse_run_config(argv, str(path))
    build_module(cfg)  # at the configured size
    g = torch.Generator().manual_seed(0)
    size = 32
    cfg.data.patch_size = size  # the operator's image size follows the patch size: keep the step cheap
    module = build_module(cfg)
    small = module.physics
    channels = 2 if small.complex_image else 1  # MRI (single- and multi-coil): complex images
    x = torch.rand(2, channels, size, size, generator=g) * 0.8 + 0.1
    params = small.sample_params(2, g)
    op = small.with_params(**params) if params else small
    if op.noise.kind == "unknown":  # a config for measured data: simulate them with some noise
        from selfinv.physics import GaussianNoise

        y = op.with_noise(GaussianNoise(0.1))(x, generator=g)
    else:
        y = op(x, generator=g)
    loss = module.loss(y, op, module.model, x=x, generator=g)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in module.model.parameters() if p.requires_grad]
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), f"no gradient reaches the model ({path.name})"
