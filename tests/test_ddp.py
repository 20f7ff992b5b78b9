"""Multi-process training (Lightning DDP, gloo on CPU) against single-process big-batch training.

What is equal and why: with a deterministic loss (supervised MSE; no random draw inside the
loss), no batch-coupled layer (no batch norm: statistics would be per rank) and per-rank batches
that together form the single-process batch (``EpochSeededSampler`` shards one seeded order by
striding), DDP's all-reduced gradient (mean over ranks of per-rank mean gradients) equals the
big-batch mean gradient, so Adam takes the same steps: equal weights up to float32 reduction
order. With a random loss (EI transforms, SURE probes, R2R recorruptions) each rank draws from its
own stream (seed, rank), so the draws differ from a one-process run's: there the test checks that
the streams differ across ranks and that the multi-process run is reproducible instead.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from selfinv.training.datamodule import EpochSeededSampler

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

# train: 36 patches - ceil(0.1 * 36) = 4 held out = 32 (a multiple of the world size 2 and of 4)
CONFIG = {
    "data": {"dataset": "natural-gray", "patch_size": 16, "num_patches": 36, "batch_size": 4,
             "val_fraction": 0.1, "seed": 0},
    "physics": {"name": "denoising", "noise": {"name": "gaussian", "args": {"sigma": 0.1}}},
    "model": {"backbone": {"name": "unet", "args": {"scales": 2, "base_channels": 4, "batch_norm": False}}},
    "losses": [{"name": "supervised"}],
    "optim": {"lr": 0.01},
    "trainer": {"max_steps": 6, "accelerator": "cpu", "devices": 1, "strategy": "auto", "seed": 0,
                "progress_bar": False, "figures": False, "val_every": 1000, "checkpoint_every": 1000,
                "deterministic": True, "log_every_n_steps": 1, "precision": "32-true"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit(tmp: Path, name: str, devices: int, batch_size: int, losses=None) -> dict:
    out = tmp / name
    base = copy.deepcopy(CONFIG)
    cfg = {**base, "data": {**base["data"], "batch_size": batch_size},
           "trainer": {**base["trainer"], "devices": devices, "output_dir": str(out),
                       "strategy": "ddp" if devices > 1 else "auto"}}
    if losses is not None:
        cfg["losses"] = losses
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    r = subprocess.run([sys.executable, "-m", "selfinv.cli", "fit", "--config", str(path)], cwd=tmp, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == CONFIG["trainer"]["max_steps"]
    return ckpt


def _max_diff(a: dict, b: dict) -> float:
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa if k.startswith("model."))


def test_sampler_shards_reproduce_the_big_batch():
    n, world, b = 32, 2, 3
    for epoch in (0, 5):
        single = EpochSeededSampler(n, seed=7, rank=0, world_size=1)
        single.set_epoch(epoch)
        order = list(single)
        shards = []
        for rank in range(world):
            s = EpochSeededSampler(n, seed=7, rank=rank, world_size=world)
            s.set_epoch(epoch)
            shards.append(list(s))
            assert len(s) == n // world
        assert sorted(shards[0] + shards[1]) == list(range(n))  # disjoint, complete
        for k in range(n // (world * b)):
            union = sorted(shards[0][k * b:(k + 1) * b] + shards[1][k * b:(k + 1) * b])
            assert union == sorted(order[k * world * b:(k + 1) * world * b])
    # n not a multiple of the world size: padded by wrapping (DistributedSampler semantics)
    parts = [list(EpochSeededSampler(5, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 3 and set(parts[0] + parts[1]) == set(range(5))
    with pytest.raises(ValueError, match="rank"):
        list(EpochSeededSampler(4, rank=2, world_size=2))


def test_loss_generators_differ_across_ranks_and_are_reproducible():
    from selfinv.config import from_dict
    from selfinv.training.engine import build_module

    draws = {}
    for rank in (0, 1, 0):
        m = build_module(from_dict(copy.deepcopy(CONFIG)))
        m._rank = lambda r=rank: r  # what global_rank gives under DDP
        draws.setdefault(rank, []).append(torch.rand(4, generator=m.generator))
    assert torch.equal(draws[0][0], draws[0][1])
    assert not torch.allclose(draws[0][0], draws[1][0])


def test_two_process_ddp_equals_one_process_double_batch(tmp_path):
    big = _fit(tmp_path, "single_b4", devices=1, batch_size=4)
    ddp = _fit(tmp_path, "ddp_2x2", devices=2, batch_size=2)
    small = _fit(tmp_path, "single_b2", devices=1, batch_size=2)
    diff, control = _max_diff(big, ddp), _max_diff(big, small)
    # float32 (precision "32-true": bf16 autocast would blur the comparison): the all-reduce averages
    # two partial means instead of one mean over 4 samples; measured
    # differences are ~1e-7 after 6 Adam steps (lr 1e-2). The control (1 process, batch 2 = different
    # batches) moves the weights by ~1e-2, so 1e-5 separates the two cases by three orders of magnitude.
    print(f"max |w_ddp - w_big| = {diff:.3g}, control max |w_small - w_big| = {control:.3g}")
    assert diff < 1e-5, diff
    assert control > 1e-3, control


@pytest.mark.slow
def test_torchrun_launch_matches_lightning_launch(tmp_path):
    """``python -m torch.distributed.run --nproc_per_node 2 -m selfinv.cli fit ...`` (how a user starts
    the processes outside Lightning) trains the same as Lightning's own launcher: identical weights
    (same sharding, same seeds; measured difference 0.0)."""
    lightning_run = _fit(tmp_path, "ddp_lightning", devices=2, batch_size=2)
    cfg = copy.deepcopy(CONFIG)
    cfg["data"]["batch_size"] = 2
    cfg["trainer"].update({"devices": 2, "strategy": "ddp", "output_dir": str(tmp_path / "ddp_torchrun")})
    path = tmp_path / "torchrun.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                        "-m", "selfinv.cli", "fit", "--config", str(path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = torch.load(tmp_path / "ddp_torchrun" / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    assert "MEMBER: 2/2" in r.stderr + r.stdout
    assert _max_diff(lightning_run, ckpt) < 1e-6


def test_cli_closes_the_process_group_it_leaves_behind(tmp_path):
    """After a command, ``selfinv.cli`` destroys an initialised process group (a torchrun worker's), so that
    its threads are joined before the interpreter exits instead of aborting the finished process."""
    import torch.distributed as dist

    from selfinv.cli import close_process_group, main

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized()
    assert main(["advise", "--physics", "denoising", "--noise", "unknown"]) == 0
    assert not dist.is_initialized()
    close_process_group()  # nothing left: a no-op
