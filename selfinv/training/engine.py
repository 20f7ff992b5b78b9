"""From a validated ``RunConfig`` to Lightning objects, and the ``fit`` / ``validate`` entry points.

Checkpoints (``best-*.ckpt`` by ``select_by``, and ``last.ckpt``) are written
atomically at epoch boundaries (every ``trainer.checkpoint_every`` epochs) and
``last.ckpt`` again when training stops (``max_steps``, ``max_time``, the end).
``fit(..., resume=...)`` continues a run exactly from any of them: the data
module records the position inside the epoch, the module the RNG and
loss-generator states, Lightning the optimiser and schedulers; the run's
``metrics.csv`` is appended to (``selfinv.training.resume``,
``selfinv.training.csv_log``). On CPU in deterministic mode a resumed run ends
with bit-identical weights (``tests/test_resume.py``).
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

from selfinv import registry
from selfinv.config import RunConfig, physics_args, to_dict
from selfinv.losses.base import WeightedSum
from selfinv.physics.base import Physics
from selfinv.training.callbacks import FiguresCallback, FinalCheckpoint
from selfinv.training.checkpoint import AtomicCheckpointIO, clean_stale_files, read_checkpoint
from selfinv.training.csv_log import RunCSVLogger
from selfinv.training.datamodule import MeasurementDataModule, has_ground_truth, split_measurements
from selfinv.training.module import SelfSupervisedModule
from selfinv.training.resume import ResumeMismatch, check_same_problem, resolve_resume


def build_physics(cfg: RunConfig) -> Physics:
    noise = registry.build("noise", cfg.physics.noise.name, cfg.physics.noise.args, where="physics.noise")
    return registry.build("physics", cfg.physics.name, physics_args(cfg), where="physics", noise=noise)


def build_model(cfg: RunConfig) -> torch.nn.Module:
    backbone = registry.build("backbone", cfg.model.backbone.name, cfg.model.backbone.args, where="model.backbone")
    rec = cfg.model.reconstructor
    cls = registry.resolve("model", rec.name, "model.reconstructor")
    takes = inspect.signature(cls).parameters
    key = "backbone" if "backbone" in takes else "prior" if "prior" in takes else None
    if key is None:
        raise registry.RegistryError(f"model.reconstructor: {cls.__name__} takes neither 'backbone' nor 'prior'")
    return registry.build("model", rec.name, rec.args, where="model.reconstructor", **{key: backbone})


def build_loss(cfg: RunConfig) -> WeightedSum:
    """The weighted sum of the config's losses, terms named after their registry names."""
    terms = [registry.build("loss", l.name, l.args, where=f"losses.{i}") for i, l in enumerate(cfg.losses)]
    return WeightedSum(terms, [l.weight for l in cfg.losses], [l.name for l in cfg.losses])


def _image_channels(cfg: RunConfig) -> int | None:
    return cfg.model.backbone.args.get("in_channels")


def build_dataset(cfg: RunConfig, physics: Physics):
    """The measurement data set: a file (``data.path``) or bundled images simulated through ``physics``."""
    from selfinv.data.measurements import MeasurementDataset

    d = cfg.data
    if d.path is not None:
        return MeasurementDataset.load(d.path)
    from selfinv.data.bundled import load_dataset
    from selfinv.data.patches import random_patches

    images = load_dataset(d.dataset, split="train").images
    x = random_patches(images, d.patch_size, d.num_patches, generator=torch.Generator().manual_seed(d.seed))
    channels = _image_channels(cfg)
    if channels == 2 and x.shape[1] == 1:  # complex images (MRI): real part = image, imaginary = 0
        x = torch.cat([x, torch.zeros_like(x)], dim=1)
    pairs = "y2" in build_loss(cfg).batch_keys
    return MeasurementDataset(x, physics, seed=d.seed + 1, keep_ground_truth=True, pairs=pairs)


def check_dataset(ds, physics: Physics) -> None:
    """Every measurement finite and inside the noise model's support (once, at load time: the losses
    then skip their per-call check)."""
    from selfinv.physics.support import check_measurement

    for i in range(len(ds)):
        check_measurement(ds[i]["y"][None], physics.noise, f"measurement {i} of the data")


def build_datamodule(cfg: RunConfig, physics: Physics) -> MeasurementDataModule:
    ds = build_dataset(cfg, physics)
    check_dataset(ds, physics)
    train, val = split_measurements(ds, cfg.data.val_fraction, cfg.data.seed)
    return MeasurementDataModule(train, val, cfg.data.batch_size, cfg.data.num_workers, cfg.data.seed)


def build_module(cfg: RunConfig, physics: Physics | None = None) -> SelfSupervisedModule:
    physics = physics if physics is not None else build_physics(cfg)
    loss = build_loss(cfg)
    loss.check(physics)
    o = cfg.optim
    return SelfSupervisedModule(build_model(cfg), physics, loss, lr=o.lr, weight_decay=o.weight_decay,
                                scheduler=o.scheduler, step_size=o.step_size, gamma=o.gamma,
                                seed=cfg.trainer.seed, config=to_dict(cfg))


def resolve_precision(precision: str, accelerator: str) -> str:
    """'auto' -> 'bf16-mixed' on CUDA, '32-true' elsewhere (CPU stays float32 unless asked)."""
    if precision != "auto":
        return precision
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_cuda else "32-true"


def build_trainer(cfg: RunConfig, extra_callbacks: Sequence[pl.Callback] = (), has_truth: bool = False,
                  steps_per_epoch: int | None = None, resume_step: int | None = None) -> pl.Trainer:
    """The Lightning trainer of ``cfg``: checkpoints, early stopping, logs, figures, precision.

    ``steps_per_epoch`` (when known) lets a run shorter than one epoch still validate (and so select
    a checkpoint) when it stops; ``resume_step`` makes the CSV log append to the resumed run's.
    """
    t = cfg.trainer
    out = t.output_dir
    monitor = cfg.select_by
    if monitor == "val/psnr" and not has_truth:
        raise ValueError("select_by='val/psnr' needs ground truth in the validation data; use 'val/loss'")
    mode = "max" if monitor == "val/psnr" else "min"
    ckpt = ModelCheckpoint(dirpath=os.path.join(out, "checkpoints"), filename="best-{epoch}-{step}",
                           monitor=monitor, mode=mode, save_top_k=1,
                           every_n_epochs=t.checkpoint_every, save_on_train_epoch_end=False,
                           auto_insert_metric_name=False)
    # ``last.ckpt`` is rewritten (atomically) at every checkpoint epoch, improved or not
    last = ModelCheckpoint(dirpath=os.path.join(out, "checkpoints"), filename="last", monitor=None,
                           save_top_k=1, every_n_epochs=t.checkpoint_every, save_on_train_epoch_end=False,
                           enable_version_counter=False)
    callbacks: list[pl.Callback] = [ckpt, last, FinalCheckpoint(os.path.join(out, "checkpoints", "last.ckpt"))]
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=t.early_stopping_patience,
                                       check_finite=False))  # non-finite values stop training with an error
    if t.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps)))
    if t.figures:
        callbacks.append(FiguresCallback(out))
    callbacks.extend(extra_callbacks)
    loggers: list = [RunCSVLogger(out, resume_step=resume_step, name="logs", version="")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out, name="tensorboard", version=""))
    except ImportError:
        pass
    # a run that stops inside its first epoch validates at its last step instead of never
    short = t.max_steps > 0 and steps_per_epoch is not None and t.max_steps < steps_per_epoch
    val_interval = t.max_steps if short else None
    return pl.Trainer(
        max_steps=t.max_steps, max_epochs=t.max_epochs if t.max_steps <= 0 else -1,
        max_time=None if t.max_time_minutes is None else {"seconds": 60.0 * t.max_time_minutes},
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator), deterministic=t.deterministic,
        callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()], default_root_dir=out,
        enable_progress_bar=t.progress_bar, log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=t.val_every, num_sanity_val_steps=0, val_check_interval=val_interval,
        inference_mode=False,  # validation may need autograd (SURE's exact divergence)
        use_distributed_sampler=False,  # EpochSeededSampler shards across DDP ranks itself
    )


def resolve_noise_level(cfg: RunConfig) -> tuple[RunConfig, dict | None]:
    """Replace ``sigma: auto`` / ``gain: auto`` by estimates from the training measurements
    (``selfinv.training.auto_noise``); logs the estimate and writes ``noise_estimate.json``."""
    from selfinv.training.auto_noise import resolve_auto_noise, write_noise_record

    cfg, record = resolve_auto_noise(cfg)
    if record is not None:
        from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

        rank_zero_info(f"selfinv: estimated noise level {record['estimated']} from "
                       f"{record['n_measurements']} training measurements ({record['method']})")
        rank_zero_only(write_noise_record)(record, cfg.trainer.output_dir)
    return cfg, record


def fit(cfg: RunConfig, resume: str | None = None, extra_callbacks: Sequence[pl.Callback] = (),
        resume_weights_only: bool = False) -> tuple[pl.Trainer, SelfSupervisedModule]:
    """Train the run described by ``cfg``; returns the trainer and the module (best checkpoint path in
    ``trainer.checkpoint_callback.best_model_path``).

    ``resume``: ``'last'`` or a checkpoint path; the checkpoint must come from the same problem
    (``selfinv.training.resume``) unless ``resume_weights_only``, which starts a new run from its
    network weights.
    """
    ckpt_dir = os.path.join(cfg.trainer.output_dir, "checkpoints")
    ckpt_path = resolve_resume(resume, cfg.trainer.output_dir)
    stored = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    cfg, noise_record = resolve_noise_level(cfg)
    if stored is not None and not resume_weights_only:
        check_same_problem(stored["hyper_parameters"]["config"], to_dict(cfg), str(ckpt_path))
    physics = build_physics(cfg)
    dm = build_datamodule(cfg, physics)
    module = build_module(cfg, physics)
    if noise_record is not None:
        module.hparams["noise_estimate"] = noise_record
    resume_step = None
    if stored is not None and resume_weights_only:
        _load_model_weights(module, stored, str(ckpt_path))
        ckpt_path = None
    elif stored is not None:
        resume_step = int(stored.get("global_step", 0))
        best = _stored_best(stored)
        clean_stale_files(ckpt_dir, keep_best=best)
    else:
        clean_stale_files(ckpt_dir)
    steps_per_epoch = math.ceil(len(dm.train_set) / cfg.data.batch_size)
    trainer = build_trainer(cfg, extra_callbacks, has_truth=dm.has_ground_truth, steps_per_epoch=steps_per_epoch,
                            resume_step=resume_step)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module


def _stored_best(ckpt: dict) -> str | None:
    """The ``best_model_path`` recorded by the best-checkpoint callback in ``ckpt`` (None if absent)."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if "ModelCheckpoint" in str(key) and isinstance(state, dict) and state.get("monitor"):
            return state.get("best_model_path") or None
    return None


def _load_model_weights(module: SelfSupervisedModule, ckpt: dict, where: str) -> None:
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    try:
        module.model.load_state_dict(state)
    except RuntimeError as e:
        raise ResumeMismatch(f"--resume-weights-only {where}: the network of the checkpoint does not match "
                             f"model.backbone of the config ({str(e).splitlines()[0]})") from None


def validate(cfg: RunConfig, checkpoint: str) -> list[dict]:
    """Self-supervised validation loss (and PSNR/SSIM when ground truth exists) of a checkpoint."""
    if not checkpoint:
        raise ValueError("validate needs --checkpoint CKPT (validating an untrained network means nothing)")
    read_checkpoint(checkpoint)
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    cfg, _ = resolve_noise_level(cfg)
    physics = build_physics(cfg)
    dm = build_datamodule(cfg, physics)
    module = build_module(cfg, physics)
    trainer = build_trainer(cfg, has_truth=dm.has_ground_truth)
    return trainer.validate(module, datamodule=dm, ckpt_path=checkpoint)


__all__ = ["build_physics", "build_model", "build_loss", "build_dataset", "build_datamodule", "build_module",
           "build_trainer", "fit", "validate", "resolve_noise_level", "resolve_precision", "has_ground_truth",
           "resolve_resume"]
