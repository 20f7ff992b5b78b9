"""Nothing fails silently: divergence stops training, resume is exact or refused, logs and checkpoints
survive restarts, reconstructions are reproducible."""

import csv
import math

import numpy as np
import pytest
import torch

from selfinv.cli import main
from selfinv.config import parse_run_config
from selfinv.training.checkpoint import load_checkpoint
from selfinv.training.divergence import TrainingDiverged
from selfinv.training.engine import fit, load_data

CONFIG = """
data: {patch_size: 16, num_patches: 40, batch_size: 4, val_fraction: 0.2, seed: 3}
physics: {name: denoising, noise: {name: gaussian, args: {sigma: 0.2}}}
model: {backbone: {name: unet, args: {scales: 2, base_channels: 4}}}
losses:
  - {name: sure, args: {divergence: mc}}
trainer: {max_epochs: 2, deterministic: true, progress_bar: false, figures: false, accelerator: cpu, seed: 5,
          log_every_n_steps: 1}
"""


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(CONFIG)
    return p


def _cfg(config, out, *extra):
    return parse_run_config(["--trainer.output_dir", str(out), *extra], str(config))


def test_divergence_stops_with_a_clear_error_and_no_nonfinite_checkpoint(tmp_path, config, capsys):
    out = tmp_path / "run"
    code = main(["fit", "--config", str(config), "--trainer.output_dir", str(out), "--optim.lr", "1e6"])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "diverged at step" in err and "Traceback" not in err
    for ckpt in (out / "checkpoints").glob("*.ckpt") if (out / "checkpoints").exists() else []:
        weights = load_checkpoint(ckpt)["state_dict"]
        assert all(torch.isfinite(v).all() for v in weights.values()), ckpt.name


def test_divergence_names_the_first_bad_step(tmp_path, config):
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+: .*loss"):
        fit(_cfg(config, tmp_path / "run", "--optim.lr", "1e6"))


def test_a_nonfinite_gradient_at_the_step_before_a_checkpoint_is_caught_in_the_weights(tmp_path, config):
    """The gradient is not checked at every step: a non-finite one makes the weights non-finite at the
    optimiser step, and the check that precedes every checkpoint reads the weights (here the gradient of the
    last step of an epoch is NaN, so the loss of no step is: only the weights can tell). No checkpoint holds
    the non-finite weights."""
    import lightning.pytorch as pl

    class NanGradientAt(pl.Callback):
        def __init__(self, step: int):
            self.step = step

        def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
            if trainer.global_step == self.step:
                next(p for p in module.parameters() if p.grad is not None).grad.fill_(float("nan"))

    out = tmp_path / "run"
    cfg = _cfg(config, out, "--trainer.max_steps", "16", "--trainer.log_every_n_steps", "50")
    steps_per_epoch = math.ceil(len(load_data(cfg).train) / cfg.data.batch_size)
    with pytest.raises(TrainingDiverged, match=r"diverged at step \d+: non-finite \(inf/NaN\) network weights "
                                               r"\(a non-finite gradient reached them\)"):
        fit(cfg, extra_callbacks=[NanGradientAt(steps_per_epoch - 1)])
    for ckpt in (out / "checkpoints").glob("*.ckpt"):
        assert all(torch.isfinite(v).all() for v in load_checkpoint(ckpt)["state_dict"].values()), ckpt.name


def test_resume_after_a_max_steps_stop_mid_epoch_is_exact(tmp_path, config):
    """32 training measurements, batch 4: 8 steps per epoch. Stop at step 5 (mid-epoch), resume to 12
    steps; compare with 12 uninterrupted steps. A constant learning rate: a schedule over the run's
    length (the default) depends on max_steps, which the resume changes."""
    a, b = tmp_path / "a", tmp_path / "b"
    const = ("--optim.scheduler", "none")
    fit(_cfg(config, a, "--trainer.max_steps", "5", *const))
    mid = load_checkpoint(a / "checkpoints" / "last.ckpt")
    assert mid["global_step"] == 5
    ta, _ = fit(_cfg(config, a, "--trainer.max_steps", "12", *const), resume="last")
    tb, _ = fit(_cfg(config, b, "--trainer.max_steps", "12", *const))
    ca, cb = load_checkpoint(a / "checkpoints" / "last.ckpt"), load_checkpoint(b / "checkpoints" / "last.ckpt")
    assert ca["global_step"] == cb["global_step"] == 12
    assert ta.current_epoch == tb.current_epoch
    for k in cb["state_dict"]:
        assert torch.equal(ca["state_dict"][k], cb["state_dict"][k]), k
    assert any(not torch.equal(mid["state_dict"][k], cb["state_dict"][k]) for k in cb["state_dict"])


def test_logs_are_appended_across_a_resume(tmp_path, config):
    out = tmp_path / "run"
    fit(_cfg(config, out, "--trainer.max_steps", "5"))
    fit(_cfg(config, out, "--trainer.max_steps", "10"), resume="last")
    with open(out / "logs" / "metrics.csv") as f:
        steps = [int(float(r["step"])) for r in csv.DictReader(f) if r.get("train/loss")]
    assert min(steps) < 5 and max(steps) >= 9  # both parts of the run are there
    assert len(steps) == len(set(steps))  # nothing logged twice


def test_resume_with_another_problem_is_refused_unless_weights_only(tmp_path, config, capsys):
    out = tmp_path / "run"
    fit(_cfg(config, out, "--trainer.max_steps", "3"))
    argv = ["fit", "--config", str(config), "--trainer.output_dir", str(out), "--trainer.max_steps", "6",
            "--resume", "last", "--physics.noise.args", "{sigma: 0.3}", "--losses.0.name", "r2r"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "another setup" in err and "sigma" in err and "--resume-weights-only" in err
    assert main(argv + ["--resume-weights-only"]) == 0
    last = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 6  # a new run of 6 steps, not 3 + 3
    assert last["hyper_parameters"]["config"]["losses"][0]["name"] == "r2r"


def test_a_new_run_into_the_folder_of_an_earlier_one_is_refused(tmp_path, config, capsys):
    """Without --resume, a run into a folder holding another run's checkpoints would number its own beside them
    (best-…-v1.ckpt), replace last.ckpt and restart the log: refused in one line naming --resume last; the
    earlier run is untouched and --resume last continues it."""
    out = tmp_path / "run"
    fit(_cfg(config, out, "--trainer.max_steps", "3"))
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    argv = ["fit", "--config", str(config), "--trainer.output_dir", str(out), "--trainer.max_steps", "5"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the checkpoints of an earlier run" in err and "--resume last" in err, err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    assert main(argv + ["--resume", "last"]) == 0
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"] == 5


def test_stale_temporary_checkpoints_are_cleaned_on_the_next_start(tmp_path, config):
    ckdir = tmp_path / "run" / "checkpoints"
    ckdir.mkdir(parents=True)
    stale = ckdir / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    fit(_cfg(config, tmp_path / "run", "--trainer.max_steps", "2"))
    assert not stale.exists()
    assert not list(ckdir.glob(".*.tmp"))


def test_a_run_shorter_than_one_epoch_validates_and_selects_with_early_stopping(tmp_path, config):
    trainer, _ = fit(_cfg(config, tmp_path / "run", "--trainer.max_steps", "3",
                          "--trainer.early_stopping_patience", "2"))
    assert trainer.global_step == 3
    assert trainer.checkpoint_callback.best_model_path  # validated at the last step, so a best exists
    assert math.isfinite(float(trainer.checkpoint_callback.best_model_score))


def test_validate_requires_a_checkpoint(config, capsys):
    assert main(["validate", "--config", str(config)]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err


def test_predict_with_a_monte_carlo_estimator_is_reproducible(tmp_path, config):
    out = tmp_path / "run"
    cfg = _cfg(config, out, "--trainer.max_steps", "2", "--losses.0.name", "r2r",
               "--losses.0.args", "{noise: gaussian, alpha: 0.2, n_test: 4}")
    fit(cfg)
    img = tmp_path / "y.npy"
    np.save(img, np.random.default_rng(0).random((24, 24)).astype(np.float32))
    outs = []
    for k in range(2):
        assert main(["predict", "--checkpoint", str(out / "checkpoints" / "last.ckpt"), "--input", str(img),
                     "--output", str(tmp_path / f"p{k}"), "--format", "npy"]) == 0
        outs.append(np.load(next((tmp_path / f"p{k}").glob("*.npy"))))
    assert np.array_equal(outs[0], outs[1])
