"""Typed run configuration, parsed from YAML and validated before anything runs.

One ``RunConfig`` describes one experiment::

    data:     where the measurements come from (bundled images + simulation, or the user's files)
    physics:  {name, args, noise: {name, args}}       registered operator + noise model
    model:    {backbone: {name, args}, reconstructor: {name, args}}
    losses:   [{name, args, weight}, ...]             registered losses, weighted sum
    optim:    learning rate, weight decay, scheduler
    trainer:  steps/epochs, device, precision, checkpoints, early stopping, output dir
    select_by: 'val/loss' (self-supervised, default) or 'val/psnr' (needs ground truth)

The command line is generated from these dataclasses (``selfinv.options``); every
field can be overridden (``--trainer.max_steps 10``, ``--losses.0.name sure``).
Configs are plain data: YAML is read by ``selfinv.safe_yaml`` (no Python tags,
no duplicated keys, bounded aliases), values are converted to the declared types
and component names are resolved only through ``selfinv.registry`` — nothing in a
config (or in the config stored in a checkpoint) can import or execute anything.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence, Union

from selfinv import options, registry, safe_yaml
from selfinv.options import ConfigError


def _help(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, help: str = "") -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class Component:
    """A registered component: ``name`` from the registry and constructor ``args``."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class NoiseConfig:
    name: str = _help("unknown", help="registered noise model; 'unknown' (measured data, noise not modelled) "
                                      "suits noise-agnostic losses and cannot simulate")
    args: dict[str, Any] = _help(factory=dict, help="its arguments, e.g. {sigma: 0.1} or {sigma: auto}")


@dataclass
class PhysicsConfig:
    name: str = _help("denoising", help="registered operator")
    args: dict[str, Any] = _help(factory=dict, help="its arguments, e.g. {acceleration: 4}")
    noise: NoiseConfig = field(default_factory=NoiseConfig)


#: the default network: a small U-Net (3 scales, 16-32-64 channels, 0.12 M parameters), transposed-convolution
#: upsampling, no batch norm, residual output. Among the backbones measured for the time-to-quality benchmark
#: (U-Nets of 16 to 64 channels at full or half resolution, the 2.07 M reference U-Net) it reached the best test
#: PSNR for a given CPU time, supervised and with SURE (benchmarks/results/anchor_train.md).
DEFAULT_BACKBONE = {"scales": 3, "base_channels": 16, "upsample": "transposed", "batch_norm": False,
                    "residual": True}


@dataclass
class ModelConfig:
    backbone: Component = field(default_factory=lambda: Component("unet", dict(DEFAULT_BACKBONE)))
    reconstructor: Component = field(default_factory=lambda: Component("back_projection", {"init": "dagger"}))


@dataclass
class LossConfig:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0


@dataclass
class DataConfig:
    dataset: Optional[str] = _help("natural-gray", help="a bundled clean-image data set (simulated measurements)")
    dataset_args: dict[str, Any] = _help(factory=dict, help="options of the bundled data set, e.g. {size: 64} "
                                                            "for mri-slices (whole slices at 64x64)")
    intensity_range: Optional[list[float]] = _help(
        None, help="[lo, hi]: map the bundled clean images from [0, 1] to [lo, hi] before simulation (Gamma "
                   "noise needs x > 0, e.g. [0.05, 1.0]); null keeps them")
    path: Optional[str] = _help(None, help="your measurements: a file or folder of PNG/TIFF/NPY/NPZ/MRC/DICOM/FITS/"
                                           "fastMRI HDF5, or a 'selfinv simulate' file (overrides dataset)")
    target: Optional[str] = _help(None, help="ground truth matching data.path one to one (only logged: PSNR/SSIM)")
    pairs: Optional[str] = _help(None, help="a second noisy measurement of each image of data.path, matching it one "
                                            "to one (even/odd frame sums, two exposures): the pairs Noise2Noise "
                                            "trains on")
    key: Optional[str] = _help(None, help="which array of an NPZ/HDF5 file (default: 'kspace' or the only one)")
    normalize: Literal["auto", "scale", "none"] = _help(
        "auto", help="units of data.path: 'auto' robust percentiles (an offset only where the model allows "
                     "it), 'scale' no offset, 'none' as stored; undone on every output")
    offset: Optional[float] = _help(
        None, help="a constant your detector adds to every measurement (camera bias, dark level), in your units: "
                   "subtracted before training, added back on every output (image-domain physics). Photon-"
                   "counting noise (poisson, poisson_gaussian) has no offset in its model: set it for such data")
    patch_size: int = _help(64, help="side of the training patches (image-domain physics)")
    num_patches: int = _help(512, help="training patches per epoch")
    batch_size: int = 8
    val_fraction: float = _help(0.1, help="held out for self-supervised validation: measurements, whole images, "
                                          "or a region of a single image; 0 = no validation")
    seed: int = 0
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = _help(2e-3, help="Adam learning rate (peak of the schedule)")
    weight_decay: float = 0.0
    scheduler: Literal["none", "warmup_cosine", "cosine", "step"] = _help(
        "warmup_cosine", help="warmup_cosine: linear warm-up, then a half cosine to 0 at the end of the run (in "
                              "steps, or in time when trainer.max_time_minutes is set)")
    warmup: float = _help(0.03, help="warm-up fraction of the run (warmup_cosine)")
    step_size: int = _help(1000, help="StepLR: decay by gamma every step_size steps")
    gamma: float = 0.5


@dataclass
class TrainerConfig:
    max_steps: int = _help(-1, help="optimiser steps (-1: use max_epochs)")
    max_epochs: Optional[int] = 10
    max_time_minutes: Optional[float] = _help(None, help="wall-clock budget of the training (null: no limit)")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: Union[int, str, list[int]] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: Literal["auto", "32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true"] = _help(
        "auto", help="'auto' = bf16-mixed where the hardware has bf16 units (CUDA, CPUs with AMX/AVX512-BF16), "
                     "else 32-true")
    deterministic: bool = False
    checkpoint_every: int = _help(1, help="write a checkpoint every N epochs")
    early_stopping_patience: int = _help(0, help="stop after N validations without improvement (0 = never)")
    val_every: int = 1
    seed: int = 0
    output_dir: str = "runs/run"
    progress_bar: bool = True
    log_every_n_steps: int = 10
    figures: bool = True


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    physics: PhysicsConfig = field(default_factory=PhysicsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    losses: list[LossConfig] = field(default_factory=lambda: [LossConfig("sure")])
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    select_by: Literal["val/loss", "val/psnr"] = _help("val/loss", help="metric driving checkpoint selection")


# -- dict <-> dataclass ------------------------------------------------------------

def to_dict(cfg: RunConfig) -> dict:
    """Plain nested dict (YAML/JSON/checkpoint safe)."""
    return options.to_plain(cfg)


def from_dict(data: dict, where: str = "") -> RunConfig:
    """Build and validate a ``RunConfig`` from a plain dict (e.g. a checkpoint's hyper-parameters).

    Missing sections and fields take their defaults; the data is checked to be plain (no objects) and
    is never interpreted beyond the declared types.
    """
    try:
        safe_yaml.check_plain(data, where)
    except safe_yaml.YamlError as e:
        raise ConfigError(str(e)) from None
    merged = _merge(to_dict(RunConfig()), copy.deepcopy(data), RunConfig, where)
    run = options.build_dataclass(RunConfig, merged, where)
    validate(run)
    return run


def load_yaml(path: str) -> dict:
    """A config file as a plain dict (``selfinv.safe_yaml``: plain data, no duplicated keys, bounded)."""
    try:
        data = safe_yaml.load_file(path)
    except safe_yaml.YamlError as e:
        raise ConfigError(str(e)) from None
    if data is None:
        raise ConfigError(f"{path}: the config file is empty; expected sections such as data, physics, losses")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def _merge(base: dict, update: Any, cls: type, where: str) -> Any:
    """``update`` laid over ``base`` field by field for dataclass sections; other values are replaced.

    Renaming a component (``name``) without giving its ``args`` resets the args to ``{}``: the old
    component's arguments rarely fit the new one.
    """
    if not isinstance(update, dict):
        return update
    types_ = options.field_types(cls)
    out = dict(base)
    for key, value in update.items():
        tp = types_.get(key)
        if tp is None:  # unknown: reported by build_dataclass with a did-you-mean hint
            out[key] = value
        elif dataclasses.is_dataclass(tp) and isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value, tp, f"{where}.{key}")
        else:
            out[key] = value
    if "name" in update and "args" in types_ and "args" not in update and update["name"] != base.get("name"):
        out["args"] = {}
    return out


# -- semantic validation -------------------------------------------------------------

def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: RunConfig) -> None:
    """Check ranges and every registered name/argument. Raises ``ConfigError`` naming the field."""
    d, t, o = cfg.data, cfg.trainer, cfg.optim
    _check(d.dataset is not None or d.path is not None,
           "data: give either data.dataset (a bundled data set name) or data.path (a measurement file)")
    _check(d.offset is None or d.path is not None,
           "data.offset is the detector offset of your files (data.path); the bundled data sets have none")
    _check(d.patch_size >= 4, f"data.patch_size must be >= 4, got {d.patch_size}")
    _check(d.num_patches >= 1, f"data.num_patches must be >= 1, got {d.num_patches}")
    _check(d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}")
    _check(0.0 <= d.val_fraction < 1.0, f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    if d.path is None and d.dataset is not None:
        from selfinv.data.bundled import list_datasets

        names = sorted(list_datasets())
        _check(d.dataset in names, f"data.dataset: unknown bundled data set '{d.dataset}'; available: {names} "
               f"(or give your own measurements with data.path)")
    _check(d.target is None or d.path is not None, "data.target (ground truth) goes with data.path (measurements)")
    _check(d.pairs is None or d.path is not None, "data.pairs (second noisy measurements) goes with data.path")
    if d.dataset_args:
        _check(d.path is None and d.dataset is not None, "data.dataset_args are options of a bundled data set "
               "(data.dataset); they do not apply to data.path")
        from selfinv.data.bundled import dataset_options

        accepted = dataset_options(d.dataset)
        unknown = sorted(set(d.dataset_args) - set(accepted))
        _check(not unknown, f"data.dataset_args: '{d.dataset}' has no option {unknown}; accepted: {accepted}")
    if d.intensity_range is not None:
        r = d.intensity_range
        _check(len(r) == 2 and all(math.isfinite(v) for v in r) and r[0] < r[1],
               f"data.intensity_range must be [lo, hi] with lo < hi, got {r}")
        _check(d.path is None, "data.intensity_range maps bundled clean images; it does not apply to data.path")
    _check(not (d.val_fraction == 0 and t.early_stopping_patience > 0),
           "trainer.early_stopping_patience needs validation data, but data.val_fraction is 0")
    _check(not (d.val_fraction == 0 and cfg.select_by == "val/psnr"),
           "select_by 'val/psnr' needs validation data, but data.val_fraction is 0")
    _check(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    _check(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _check(0 <= o.warmup < 1, f"optim.warmup must be a fraction in [0, 1), got {o.warmup}")
    _check(t.max_steps == -1 or t.max_steps > 0, f"trainer.max_steps must be -1 or > 0, got {t.max_steps}")
    _check(t.max_steps > 0 or (t.max_epochs is not None and t.max_epochs > 0),
           "trainer: set trainer.max_steps > 0 or trainer.max_epochs > 0")
    _check(t.checkpoint_every >= 1, f"trainer.checkpoint_every must be >= 1, got {t.checkpoint_every}")
    _check(t.early_stopping_patience >= 0,
           f"trainer.early_stopping_patience must be >= 0, got {t.early_stopping_patience}")
    _check(len(cfg.losses) >= 1, "losses: give at least one loss, e.g. [{name: sure}]")
    for i, loss in enumerate(cfg.losses):
        _check(math.isfinite(loss.weight) and loss.weight >= 0,
               f"losses.{i}.weight must be a finite number >= 0, got {loss.weight}")
    _check(t.max_time_minutes is None or (math.isfinite(t.max_time_minutes) and t.max_time_minutes > 0),
           f"trainer.max_time_minutes must be > 0 (or null for no limit), got {t.max_time_minutes}")
    _check(t.log_every_n_steps >= 1, f"trainer.log_every_n_steps must be >= 1, got {t.log_every_n_steps}")
    _check(t.val_every >= 1, f"trainer.val_every must be >= 1, got {t.val_every}")
    _check(t.num_nodes >= 1, f"trainer.num_nodes must be >= 1, got {t.num_nodes}")
    _check_devices(t)
    noise_cls = registry.resolve("noise", cfg.physics.noise.name, "physics.noise")
    auto = [k for k, v in cfg.physics.noise.args.items() if isinstance(v, str) and v.strip().lower() == "auto"]
    not_estimable = [k for k in auto if k not in noise_cls.estimable]
    _check(not not_estimable, f"physics.noise.args.{not_estimable[0] if not_estimable else ''}: 'auto' "
           f"(estimated from the measurements) is possible for {list(noise_cls.estimable) or 'no argument'} of "
           f"noise '{cfg.physics.noise.name}'")
    noise_args = {k: (1.0 if k in auto else v) for k, v in cfg.physics.noise.args.items()}  # 'auto': a number later
    try:
        registry.validate("physics", cfg.physics.name, physics_args(cfg), "physics")
        registry.validate("noise", cfg.physics.noise.name, noise_args, "physics.noise")
        registry.validate("backbone", cfg.model.backbone.name, cfg.model.backbone.args, "model.backbone")
        rec = registry.resolve("model", cfg.model.reconstructor.name, "model.reconstructor")
        takes = registry.accepted_args(rec)
        registry.validate("model", cfg.model.reconstructor.name, cfg.model.reconstructor.args,
                          "model.reconstructor", supplied=tuple(k for k in ("backbone", "prior") if k in takes))
        for i, loss in enumerate(cfg.losses):
            registry.validate("loss", loss.name, loss.args, f"losses.{i}")
    except registry.RegistryError as e:
        raise ConfigError(str(e)) from None
    if auto:  # ``sigma: auto`` / ``gain: auto``: estimated from the measurements (training/auto_noise.py)
        _check(d.path is not None, f"physics.noise.args.{auto[0]}: 'auto' estimates the noise level from "
               "measurements, so it needs data.path (a measurement file, e.g. from 'selfinv simulate')")
        _check(registry.resolve("physics", cfg.physics.name, "physics").image_domain,
               f"physics.noise.args.{auto[0]}: 'auto' needs image-domain measurements (denoising, blur, "
               f"downsampling), got '{cfg.physics.name}'")
    if cfg.select_by == "val/psnr":
        _check(d.path is None or d.dataset is not None or d.target is not None,
               "select_by: 'val/psnr' needs ground truth: a bundled data set, or data.target with data.path")
    _check_pairing(cfg, noise_args)


def _check_pairing(cfg: RunConfig, noise_args: dict) -> None:
    """Every loss accepts the operator and noise model (``Loss.check``), decided before any data is read.
    ``noise_args`` has placeholders for the levels that ``auto`` will estimate."""
    try:
        from selfinv.losses.base import LossConfigError

        noise = registry.build("noise", cfg.physics.noise.name, noise_args, where="physics.noise")
        physics = registry.build("physics", cfg.physics.name, physics_args(cfg), where="physics", noise=noise)
        for i, spec in enumerate(cfg.losses):
            loss = registry.build("loss", spec.name, spec.args, where=f"losses.{i}")
            try:
                loss.check(physics)
            except LossConfigError as e:
                raise ConfigError(f"losses.{i} ({spec.name}) with physics '{cfg.physics.name}' and noise "
                                  f"'{cfg.physics.noise.name}': {e}") from None
    except registry.RegistryError as e:
        raise ConfigError(str(e)) from None


def _check_devices(t: TrainerConfig) -> None:
    dev = t.devices
    if isinstance(dev, int):
        _check(dev >= 1 or dev == -1, f"trainer.devices must be >= 1, -1 (all), 'auto' or a list of device "
               f"indices, got {dev}")
    elif isinstance(dev, str):
        _check(dev == "auto" or dev.lstrip("-").isdigit() and int(dev) != 0,
               f"trainer.devices must be a number >= 1, 'auto' or a list of device indices, got {dev!r}")
    else:
        _check(len(dev) > 0 and all(d >= 0 for d in dev),
               f"trainer.devices: a list of device indices must be non-empty and >= 0, got {dev}")
    if t.accelerator in ("gpu", "cuda"):
        import torch

        _check(torch.cuda.is_available(), f"trainer.accelerator '{t.accelerator}': no CUDA GPU is available to "
               f"this torch (torch.cuda.is_available() is False); use 'cpu' or 'auto'")
    if t.accelerator == "mps":
        import torch

        _check(torch.backends.mps.is_available(), "trainer.accelerator 'mps': Apple's MPS is not available here; "
               "use 'cpu' or 'auto'")


def physics_args(cfg: RunConfig) -> dict:
    """``physics.args`` with ``img_size`` filled in from the data (``(C, patch, patch)``) when the
    operator takes one and the config does not give it."""
    args = dict(cfg.physics.args)
    try:
        cls = registry.resolve("physics", cfg.physics.name, "physics")
    except registry.RegistryError:
        return args
    if "img_size" in registry.accepted_args(cls) and "img_size" not in args:
        channels = int(cfg.model.backbone.args.get("in_channels", 1))
        args["img_size"] = (channels, cfg.data.patch_size, cfg.data.patch_size)
    elif isinstance(args.get("img_size"), list):
        args["img_size"] = tuple(args["img_size"])
    return args


# -- the command line --------------------------------------------------------------

def parse_run_config(argv: Sequence[str], config_path: str | None = None) -> RunConfig:
    """``--config run.yaml`` (optional) plus ``--section.field VALUE`` overrides -> a validated ``RunConfig``.

    The YAML file is laid over the defaults; then each override sets one field (``--losses.0.args.tau
    0.02`` reaches into the loss list); renaming a component without giving its args resets them.
    """
    data = to_dict(RunConfig())
    if config_path is not None:
        data = _merge(data, load_yaml(config_path), RunConfig, "")
    pairs = options.split_flags(argv, _is_bool_option)
    given = [k for k, _ in pairs]
    for key, raw in pairs:
        if given.count(key) > 1:
            raise ConfigError(f"--{key} is given twice")
        path = key.split(".")
        tp = options.type_at(RunConfig, path)
        value = options.read_cli_value(raw, tp, key)
        parent = _get(data, path[:-1])
        renamed = (path[-1] == "name" and isinstance(parent, dict) and "args" in parent
                   and parent.get("name") != value and ".".join(path[:-1] + ["args"]) not in given)
        options.set_path(data, path, value, key)
        if renamed:
            parent["args"] = {}
    run = options.build_dataclass(RunConfig, data)
    validate(run)
    return run


def _get(data: Any, path: Sequence[str]) -> Any:
    node = data
    for part in path:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _is_bool_option(key: str) -> bool:
    try:
        return options.type_at(RunConfig, key.split(".")) is bool
    except ConfigError:
        return False


def help_text(command: str) -> str:
    """``selfinv COMMAND --help`` for the commands driven by a ``RunConfig``."""
    lines = [f"usage: selfinv {command} [--config run.yaml] [--SECTION.FIELD VALUE ...]", "",
             "Options come from the typed selfinv.config.RunConfig; a YAML file (--config) gives any of them, the",
             "command line overrides single fields (--trainer.max_steps 100, --losses.0.name r2r,",
             "--physics.args '{acceleration: 8}'). Registered names: selfinv/registry.py; examples: configs/.", "",
             "options:"]
    return "\n".join(lines + options.dataclass_help(RunConfig())) + "\n"
