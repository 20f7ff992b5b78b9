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
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from torch import Tensor

from selfinv import registry
from selfinv.config import RunConfig, from_dict, physics_args, to_dict
from selfinv.data.normalization import Normalization
from selfinv.data.sources import Measurement, with_pairs
from selfinv.data.user_data import TrainingData
from selfinv.losses.base import WeightedSum
from selfinv.physics.base import Physics
from selfinv.training.callbacks import FiguresCallback, FinalCheckpoint
from selfinv.training.checkpoint import AtomicCheckpointIO, clean_stale_files, read_checkpoint
from selfinv.training.csv_log import RunCSVLogger
from selfinv.training.datamodule import MeasurementDataModule, has_ground_truth, split_measurements
from selfinv.training.module import SelfSupervisedModule
from selfinv.training.precision import resolve_precision
from selfinv.training.resume import ResumeMismatch, check_same_problem, resolve_resume


def build_physics(cfg: RunConfig, normalization: Normalization | None = None) -> Physics:
    """The operator and noise model of ``cfg``. Noise levels in the config are in the data's own units;
    with a ``normalization`` the noise model is expressed in the normalised units the network sees."""
    noise = registry.build("noise", cfg.physics.noise.name, cfg.physics.noise.args, where="physics.noise")
    if normalization is not None and not normalization.is_identity:
        noise = noise.scaled(1.0 / normalization.scale)
    return registry.build("physics", cfg.physics.name, physics_args(cfg), where="physics", noise=noise)


def build_operator(cfg: RunConfig) -> Physics:
    """The operator of ``cfg`` without its noise model (for reading data: sizes, ``A†``, parameters)."""
    from selfinv.physics.noise import UnknownNoise

    return registry.build("physics", cfg.physics.name, physics_args(cfg), where="physics", noise=UnknownNoise())


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


def _named_channels(cfg: RunConfig) -> int | None:
    """The image channels the config names (``model.backbone.args.in_channels`` / ``out_channels``), or None
    when it names neither: the data's own channel count is then used (``resolve_channels``)."""
    args = cfg.model.backbone.args
    if "in_channels" not in args and "out_channels" not in args:
        return None
    return int(args.get("in_channels", args.get("out_channels", 1)))


def resolve_channels(cfg: RunConfig, data: TrainingData) -> RunConfig:
    """``cfg`` with the network's ``in_channels`` and ``out_channels`` set to the channels of the user's
    measurements (colour planes, complex parts) when the config names neither and they are not 1 (the
    default: a grayscale run's config is left as it is). Every backbone of the registry takes both."""
    from lightning.pytorch.utilities import rank_zero_info

    if cfg.data.path is None or _named_channels(cfg) is not None or data.channels == 1:
        return cfg
    out = from_dict(to_dict(cfg))
    out.model.backbone.args = {**out.model.backbone.args, "in_channels": data.channels,
                               "out_channels": data.channels}
    rank_zero_info(f"selfinv: data.path holds {data.channels}-channel images: training a {data.channels}-channel "
                   f"network (model.backbone.args in_channels = out_channels = {data.channels})")
    return out


def load_data(cfg: RunConfig, normalization: Normalization | None = None,
              checkpoint: str | None = None) -> TrainingData:
    """The run's training and validation data, loaded once: the user's measurements (``data.path``,
    normalised by ``normalization`` or by one fitted to them, ``selfinv.data.user_data``) or bundled clean
    images simulated through the config's physics (already in [0, 1]: no normalisation). ``checkpoint``: the
    network's channels are that checkpoint's (``validate``), and a mismatch with the data's is said so."""
    d = cfg.data
    if d.path is not None:
        return _user_data(cfg, normalization, checkpoint)
    from selfinv.data.bundled import load_dataset
    from selfinv.data.measurements import MeasurementDataset
    from selfinv.data.patches import random_patches

    physics = build_physics(cfg)
    images = load_dataset(d.dataset, split="train", **d.dataset_args).images
    smallest = min(min(im.shape[-2:]) for im in images)
    if d.patch_size > smallest:
        raise ValueError(f"data.patch_size {d.patch_size} is larger than the smallest image of '{d.dataset}' "
                         f"({smallest} pixels); use at most {smallest}")
    x = random_patches(images, d.patch_size, d.num_patches, generator=torch.Generator().manual_seed(d.seed))
    x = map_intensity(x, d.intensity_range)
    if (_named_channels(cfg) or 1) == 2 and x.shape[1] == 1:  # complex images (MRI): real part = image, imaginary = 0
        x = torch.cat([x, torch.zeros_like(x)], dim=1)
    pairs = "y2" in build_loss(cfg).batch_keys
    ds = MeasurementDataset(x, physics, seed=d.seed + 1, keep_ground_truth=True, pairs=pairs)
    check_dataset(ds, physics.noise)
    if d.val_fraction == 0:
        return TrainingData(ds, None, Normalization(), [], True)
    train, val = split_measurements(ds, d.val_fraction, d.seed)
    return TrainingData(train, val, Normalization(), [], True)


def map_intensity(x: Tensor, intensity_range: Sequence[float] | None) -> Tensor:
    """Clean images in ``[0, 1]`` mapped to ``[lo, hi]`` (``data.intensity_range``; None: unchanged)."""
    if intensity_range is None:
        return x
    lo, hi = (float(v) for v in intensity_range)
    return lo + (hi - lo) * x


def _user_data(cfg: RunConfig, normalization: Normalization | None, checkpoint: str | None = None) -> TrainingData:
    from selfinv.data.readers import keeping_coils
    from selfinv.data.sources import check_channels, check_kspace, read_source
    from selfinv.physics.support import check_measurement

    d = cfg.data
    op = build_operator(cfg)
    noise_cls = registry.resolve("noise", cfg.physics.noise.name, "physics.noise")
    with keeping_coils(op.keeps_coils):
        measurements = read_source(d.path, d.key)
    check_kspace(measurements, cfg.physics.name, "data.path")
    if checkpoint is not None:
        channels = check_channels(measurements, _named_channels(cfg), "data.path",
                                  f"the network of {checkpoint} takes {{n}}-channel images",
                                  "validate it on measurements like those it was trained on", op.image_channels)
    else:
        channels = check_channels(measurements, _named_channels(cfg), "data.path",
                                  "model.backbone.args.in_channels is {n}", "leave in_channels and out_channels out "
                                  "of model.backbone.args to train on the data's channels", op.image_channels)
    if d.pairs is not None:
        with keeping_coils(op.keeps_coils):
            measurements = with_pairs(measurements, read_source(d.pairs, d.key))
    for m in measurements:
        check_measurement(_blank_filled(m, op), noise_cls, f"{m.name} ({m.source})")
        if m.y2 is not None:
            check_measurement(_blank_filled(replace(m, y=m.y2), op), noise_cls, f"{m.name} (its pair)")
    if "y2" in build_loss(cfg).batch_keys and any(m.y2 is None for m in measurements):
        raise ValueError("Noise2Noise needs pairs of noisy measurements of the same images: give the second "
                         "measurement of each image with data.pairs (files matching data.path one to one, e.g. "
                         "odd-frame sums beside even-frame sums), use a 'selfinv simulate' file with pairs, or "
                         "another loss")
    targets = [m.y for m in read_source(d.target, d.key)] if d.target is not None else None
    affine = op.image_domain and noise_cls.kind in ("gaussian", "colored_gaussian", "unknown", "none")

    def back_project(m: Measurement) -> Tensor:
        return operator_for(op, m).image_estimate(m.y[None])[0]

    data = TrainingData.from_measurements(
        measurements, image_domain=op.image_domain, patch_size=d.patch_size, num_patches=d.num_patches,
        val_fraction=d.val_fraction, seed=d.seed, affine=affine, normalize=d.normalize, targets=targets,
        back_project=back_project, normalization=normalization, offset=d.offset)
    data.channels = channels
    return data


def _blank_filled(m: Measurement, op: Physics) -> Tensor:
    """``m.y[None]`` with its blank (NaN) pixels filled for the checks (``fill_blank_pixels``), with a
    warning: training patches and validation crops avoid them (``selfinv.data.user_data``)."""
    from selfinv.data.sources import fill_blank_pixels

    y, blank = fill_blank_pixels(m.y[None], m, op.image_domain)
    if blank is not None:
        warnings.warn(f"{m.name}: {int(blank.sum())} blank (NaN) pixel(s) of {y.numel()}: training patches and "
                      f"validation crops avoid them", UserWarning, stacklevel=3)
    return y


def operator_for(physics: Physics, m: Measurement) -> Physics:
    """``physics`` rebuilt for the shape of measurement ``m`` and given its own parameters (e.g. a file's
    MRI mask)."""
    op = physics.for_measurement(tuple(m.y.shape))
    return op.with_params(**{k: v[None] for k, v in m.params.items()}) if m.params else op


def check_dataset(ds, noise) -> None:
    """Every measurement finite and inside the noise model's support (once, at load time: the losses
    then skip their per-call check)."""
    from selfinv.physics.support import check_measurement

    for i in range(len(ds)):
        check_measurement(ds[i]["y"][None], noise, f"measurement {i} of the data")


def with_resolved_from(cfg: RunConfig, stored: dict) -> RunConfig:
    """``cfg`` (the config a run was trained with) given what that run resolved from its data, taken from
    ``stored`` (the checkpoint's config): the noise levels it estimated (``sigma: auto`` -> the estimate)
    and the network channels it took from the data. Validating a checkpoint then uses the run's own
    estimate, not a new one, and the config the user trained with is accepted as the same problem."""
    out = from_dict(to_dict(cfg))
    kept = (stored.get("physics") or {}).get("noise") or {}
    if kept.get("name") == out.physics.noise.name:
        kept_args = kept.get("args") or {}
        out.physics.noise.args = {k: kept_args.get(k, v) if v == "auto" else v
                                  for k, v in out.physics.noise.args.items()}
    kept = ((stored.get("model") or {}).get("backbone") or {})
    if _named_channels(out) is None and kept.get("name") == out.model.backbone.name:
        kept_args = kept.get("args") or {}
        out.model.backbone.args = {**out.model.backbone.args,
                                   **{k: kept_args[k] for k in ("in_channels", "out_channels") if k in kept_args}}
    return out


def build_datamodule(cfg: RunConfig, data: TrainingData) -> MeasurementDataModule:
    return MeasurementDataModule(data.train, data.val, cfg.data.batch_size, cfg.data.num_workers, cfg.data.seed)


def build_module(cfg: RunConfig, physics: Physics | None = None,
                 normalization: Normalization | None = None) -> SelfSupervisedModule:
    """The Lightning module of ``cfg`` (network, physics, loss, optimiser settings); ``normalization`` (of
    the training data) is stored with it so that every later use applies and undoes the same one."""
    physics = physics if physics is not None else build_physics(cfg, normalization)
    loss = build_loss(cfg)
    loss.check(physics)
    o = cfg.optim
    return SelfSupervisedModule(build_model(cfg), physics, loss, lr=o.lr, weight_decay=o.weight_decay,
                                scheduler=o.scheduler, step_size=o.step_size, gamma=o.gamma, warmup=o.warmup,
                                seed=cfg.trainer.seed, config=to_dict(cfg),
                                normalization=(normalization or Normalization()).to_dict(),
                                check_every=cfg.trainer.log_every_n_steps)


def build_trainer(cfg: RunConfig, extra_callbacks: Sequence[pl.Callback] = (), has_truth: bool = False,
                  steps_per_epoch: int | None = None, resume_step: int | None = None,
                  validates: bool = True) -> pl.Trainer:
    """The Lightning trainer of ``cfg``: checkpoints, early stopping, logs, figures, precision.

    ``steps_per_epoch`` (when known) lets a run shorter than one epoch still validate (and so select
    a checkpoint) when it stops; ``resume_step`` makes the CSV log append to the resumed run's;
    ``validates=False`` (no held-out data) keeps ``last.ckpt`` as the result.
    """
    t = cfg.trainer
    out = t.output_dir
    monitor: str | None = cfg.select_by if validates else None
    if monitor == "val/psnr" and not has_truth:
        raise ValueError("select_by='val/psnr' needs ground truth in the validation data; use 'val/loss'")
    if not validates and t.early_stopping_patience > 0:
        raise ValueError("trainer.early_stopping_patience needs validation data; data.val_fraction is 0")
    mode = "max" if monitor == "val/psnr" else "min"
    # ``last.ckpt`` is rewritten (atomically) at every checkpoint epoch, improved or not; without validation
    # it is the result
    last = ModelCheckpoint(dirpath=os.path.join(out, "checkpoints"), filename="last", monitor=None,
                           save_top_k=1, every_n_epochs=t.checkpoint_every, save_on_train_epoch_end=not validates,
                           enable_version_counter=False)
    callbacks: list[pl.Callback] = [last, FinalCheckpoint(os.path.join(out, "checkpoints", "last.ckpt"))]
    if validates:
        callbacks.insert(0, ModelCheckpoint(dirpath=os.path.join(out, "checkpoints"), filename="best-{epoch}-{step}",
                                            monitor=monitor, mode=mode, save_top_k=1,
                                            every_n_epochs=t.checkpoint_every, save_on_train_epoch_end=False,
                                            auto_insert_metric_name=False))
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
        limit_val_batches=None if validates else 0,
        inference_mode=False,  # validation may need autograd (SURE's exact divergence)
        use_distributed_sampler=False,  # EpochSeededSampler shards across DDP ranks itself
    )


def build_evaluation_trainer(cfg: RunConfig) -> pl.Trainer:
    """The trainer of ``validate``: the run's devices and precision, and no logger, checkpoint or figure: the
    run folder's logs, checkpoints and figures stay those of the training."""
    t = cfg.trainer
    return pl.Trainer(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
                      precision=resolve_precision(t.precision, t.accelerator), deterministic=t.deterministic,
                      logger=False, enable_checkpointing=False, enable_progress_bar=t.progress_bar,
                      default_root_dir=t.output_dir, inference_mode=False, use_distributed_sampler=False)


def resolve_noise_level(cfg: RunConfig, data: TrainingData) -> tuple[RunConfig, dict | None]:
    """Replace ``sigma: auto`` / ``gain: auto`` by estimates from the (normalised) training measurements,
    expressed in the data's own units (``selfinv.training.auto_noise``); logs the estimate and writes
    ``noise_estimate.json``."""
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

    from selfinv.training.auto_noise import (
        CorrelatedNoiseWarning,
        DetectorOffsetWarning,
        NeighbourDetailWarning,
        auto_noise_args,
        correlation_record,
        detector_offset_warning,
        measure_noise_correlation,
        neighbour_detail_warning,
        resolve_auto_noise,
        write_noise_record,
    )

    corr, correlated = None, False
    noise = cfg.physics.noise
    if data.noise_samples and registry.resolve("physics", cfg.physics.name, "physics").image_domain:
        loss = build_loss(cfg)
        tolerated = loss.tolerated_noise_correlation
        gaussian_auto = noise.name == "gaussian" and bool(auto_noise_args(noise.name, noise.args))
        if tolerated is not None or gaussian_auto:
            names = " + ".join(spec.name for spec in cfg.losses)
            corr, warning = measure_noise_correlation(data.noise_samples, tolerated, f"the loss {names}",
                                                      data.normalization.scale)
            if warning is not None:
                correlated = True
                rank_zero_warn(warning, category=CorrelatedNoiseWarning)
        if loss.predicts_from_neighbours and not correlated:  # noise correlated beyond the loss's reach: warned
            names = " + ".join(spec.name for spec in cfg.losses)
            detail = neighbour_detail_warning(data.noise_samples, f"the loss {names}", data.normalization.scale)
            if detail is not None:
                rank_zero_warn(detail, category=NeighbourDetailWarning)
        offset_warning = detector_offset_warning(data.noise_samples, noise.name, data.normalization.offset,
                                                 data.normalization.scale)
        if offset_warning is not None:
            rank_zero_warn(offset_warning, category=DetectorOffsetWarning)
    cfg, record = resolve_auto_noise(cfg, data.noise_samples, data.normalization.scale, correlation=corr)
    if corr is not None:
        record = {**(record or {"noise": noise.name, "estimated": {}}), "correlation": correlation_record(corr)}
    if record is not None:
        if record["estimated"]:
            rank_zero_info(f"selfinv: estimated noise level {record['estimated']} (in the data's units) from "
                           f"{record['n_measurements']} training measurements ({record['method']})")
        rank_zero_only(write_noise_record)(record, cfg.trainer.output_dir)
    return cfg, record


def _check_output_dir(path: str) -> None:
    """``trainer.output_dir`` is a folder that exists or can be made (a clear error instead of an OSError later)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"trainer.output_dir: {p} is a file; give a folder for the run (checkpoints, logs, figures)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"trainer.output_dir: cannot create the folder {p} ({e.strerror or e})") from None


def fit(cfg: RunConfig, resume: str | None = None, extra_callbacks: Sequence[pl.Callback] = (),
        resume_weights_only: bool = False) -> tuple[pl.Trainer, SelfSupervisedModule]:
    """Train the run described by ``cfg``; returns the trainer and the module (best checkpoint path in
    ``trainer.checkpoint_callback.best_model_path``).

    ``resume``: ``'last'`` or a checkpoint path; the checkpoint must come from the same problem
    (``selfinv.training.resume``) unless ``resume_weights_only``, which starts a new run from its
    network weights.
    """
    _check_output_dir(cfg.trainer.output_dir)
    ckpt_dir = os.path.join(cfg.trainer.output_dir, "checkpoints")
    ckpt_path = resolve_resume(resume, cfg.trainer.output_dir)
    stored = read_checkpoint(ckpt_path) if ckpt_path is not None else None
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = load_data(cfg)
    cfg = resolve_channels(cfg, data)
    cfg, noise_record = resolve_noise_level(cfg, data)
    if stored is not None and not resume_weights_only:
        check_same_problem(stored["hyper_parameters"]["config"], to_dict(cfg), str(ckpt_path))
    physics = build_physics(cfg, data.normalization)
    dm = build_datamodule(cfg, data)
    module = build_module(cfg, physics, data.normalization)
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
    else:  # a new run: after the data and config checks, which say more than this one
        _check_no_earlier_run(ckpt_dir)
        clean_stale_files(ckpt_dir)
    steps_per_epoch = math.ceil(len(dm.train_set) / cfg.data.batch_size)
    trainer = build_trainer(cfg, extra_callbacks, has_truth=dm.has_ground_truth, steps_per_epoch=steps_per_epoch,
                            resume_step=resume_step, validates=dm.val_set is not None)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, module


def _check_no_earlier_run(ckpt_dir: str) -> None:
    """A new run does not start in a folder holding another run's checkpoints: Lightning would number its
    checkpoints beside them (``best-…-v1.ckpt``), replace ``last.ckpt`` and restart the log."""
    if not os.path.isdir(ckpt_dir):
        return
    found = sorted(f for f in os.listdir(ckpt_dir) if f.endswith(".ckpt"))
    if found:
        shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
        raise ValueError(f"trainer.output_dir: {os.path.dirname(ckpt_dir)} holds the checkpoints of an earlier run "
                         f"({shown}); continue it with --resume last, or train into another folder "
                         f"(--trainer.output_dir) or remove this one")


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
    stored = read_checkpoint(checkpoint)
    cfg = with_resolved_from(cfg, stored["hyper_parameters"]["config"])
    check_same_problem(stored["hyper_parameters"]["config"], to_dict(cfg), str(checkpoint), "validate --checkpoint")
    normalization = Normalization.from_dict(stored["hyper_parameters"].get("normalization"))
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    data = load_data(cfg, normalization, checkpoint=str(checkpoint))
    if data.val is None:
        raise ValueError("validate needs held-out measurements, but data.val_fraction is 0")
    cfg, _ = resolve_noise_level(cfg, data)
    physics = build_physics(cfg, normalization)
    dm = build_datamodule(cfg, data)
    module = build_module(cfg, physics, normalization)
    with warnings.catch_warnings():  # the checkpoint callbacks of the training are not needed to validate it
        warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`, callbacks")
        return build_evaluation_trainer(cfg).validate(module, datamodule=dm, ckpt_path=checkpoint)


__all__ = ["build_physics", "build_operator", "build_model", "build_loss", "load_data", "build_datamodule",
           "build_module", "operator_for",
           "build_trainer", "fit", "validate", "resolve_noise_level", "resolve_precision", "has_ground_truth",
           "resolve_resume"]
