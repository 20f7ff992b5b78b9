"""Typed run configuration, parsed from YAML and validated before anything runs.

One ``RunConfig`` describes one experiment::

    data:     where the measurements come from (bundled images + simulation, or a file)
    physics:  {name, args, noise: {name, args}}       registered operator + noise model
    model:    {backbone: {name, args}, reconstructor: {name, args}}
    losses:   [{name, args, weight}, ...]             registered losses, weighted sum
    optim:    learning rate, weight decay, scheduler
    trainer:  steps/epochs, device, precision, checkpoints, early stopping, output dir
    select_by: 'val/loss' (self-supervised, default) or 'val/psnr' (needs ground truth)

The command line is generated from these dataclasses by jsonargparse; every field
can be overridden (``--trainer.max_steps 10``, ``--losses.0.name sure``). YAML is
read with ``yaml.safe_load`` and component names are resolved only through
``selfinv.registry`` — a config cannot import or execute anything else.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

import yaml

from selfinv import registry


class ConfigError(ValueError):
    """A config field is missing, misspelled, of the wrong type or out of range."""


@dataclass
class Component:
    """A registered component: ``name`` from the registry and constructor ``args``."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class NoiseConfig:
    name: str = "gaussian"
    args: dict[str, Any] = field(default_factory=lambda: {"sigma": 0.1})


@dataclass
class PhysicsConfig:
    name: str = "denoising"
    args: dict[str, Any] = field(default_factory=dict)
    noise: NoiseConfig = field(default_factory=NoiseConfig)


@dataclass
class ModelConfig:
    backbone: Component = field(default_factory=lambda: Component("unet", {"scales": 2, "base_channels": 16}))
    reconstructor: Component = field(default_factory=lambda: Component("back_projection", {"init": "dagger"}))


@dataclass
class LossConfig:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0


@dataclass
class DataConfig:
    #: a bundled clean-image data set (simulated measurements) ...
    dataset: Optional[str] = "natural-gray"
    #: ... or a measurement file written by ``selfinv simulate`` (.npz / .h5); overrides ``dataset``
    path: Optional[str] = None
    patch_size: int = 64
    num_patches: int = 512
    batch_size: int = 8
    #: fraction of the *measurements* held out for self-supervised validation
    val_fraction: float = 0.1
    seed: int = 0
    num_workers: int = 0


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: Literal["none", "cosine", "step"] = "none"
    #: StepLR: decay by ``gamma`` every ``step_size`` steps
    step_size: int = 1000
    gamma: float = 0.5


@dataclass
class TrainerConfig:
    max_steps: int = -1
    max_epochs: Optional[int] = 10
    #: wall-clock budget of the training in minutes (None = no limit)
    max_time_minutes: Optional[float] = None
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    #: 'auto' = bf16-mixed on CUDA, 32-true elsewhere
    precision: Literal["auto", "32-true", "64-true", "bf16-mixed", "16-mixed", "bf16-true"] = "auto"
    deterministic: bool = False
    #: write a checkpoint every N epochs (at the epoch boundary; see resume notes)
    checkpoint_every: int = 1
    #: stop after this many validations without improvement of ``select_by`` (0 = never)
    early_stopping_patience: int = 0
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
    #: metric driving checkpoint selection and early stopping
    select_by: Literal["val/loss", "val/psnr"] = "val/loss"


# -- dict <-> dataclass ------------------------------------------------------------

def to_dict(cfg: RunConfig) -> dict:
    """Plain nested dict (YAML/JSON/checkpoint safe)."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict, where: str = "") -> RunConfig:
    """Build and validate a ``RunConfig`` from a plain dict (e.g. a checkpoint's hyper-parameters)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(RunConfig, nested_key=None, as_group=False)
    data = copy.deepcopy(data)  # jsonargparse annotates nested dicts in place; keep the caller's intact
    try:
        ns = parser.parse_object(data)
        cfg = parser.instantiate_classes(ns)
    except Exception as e:  # noqa: BLE001 - jsonargparse raises several types
        raise ConfigError(explain(str(e))) from None
    run = RunConfig(**{f.name: cfg[f.name] for f in dataclasses.fields(RunConfig)})
    validate(run)
    return run


def load_yaml(path: str) -> dict:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return data


def _fields_at(path: Sequence[str]) -> list[str] | None:
    """Allowed field names of the dataclass found at ``path`` (indices skipped)."""
    cls: Any = RunConfig
    for part in path:
        if part.isdigit():
            continue
        if not dataclasses.is_dataclass(cls):
            return None
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        if part not in hints:
            return None
        cls = _DATACLASS_OF.get((cls.__name__, part))
        if cls is None:
            return None
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else None


_DATACLASS_OF: dict[tuple[str, str], Any] = {
    ("RunConfig", "data"): DataConfig, ("RunConfig", "physics"): PhysicsConfig,
    ("RunConfig", "model"): ModelConfig, ("RunConfig", "losses"): LossConfig,
    ("RunConfig", "optim"): OptimConfig, ("RunConfig", "trainer"): TrainerConfig,
    ("PhysicsConfig", "noise"): NoiseConfig, ("ModelConfig", "backbone"): Component,
    ("ModelConfig", "reconstructor"): Component,
}


def _unknown_key_message(path: list[str]) -> str:
    allowed = _fields_at(path[:-1])
    dotted = ".".join(path)
    if allowed is None:
        return f"unknown config field '{dotted}'"
    close = difflib.get_close_matches(path[-1], allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown config field '{dotted}'{hint}; allowed fields here: {allowed}"


def explain(message: str) -> str:
    """Turn a jsonargparse message into one that names the field and the allowed values."""
    m = re.search(r"unrecognized arguments: --([\w.\-]+)", message)
    if m:
        return _unknown_key_message(m.group(1).split("."))
    m = re.search(r'Parser key "([\w.]+)":.*?Option \'(\w+)\' is not accepted', message, re.S)
    if m:
        return _unknown_key_message(m.group(1).split(".") + ["0", m.group(2)])
    m = re.search(r"Key \"?'?([\w.]+)'?\"? is not expected", message)
    if m:
        return _unknown_key_message(m.group(1).split("."))
    m = re.search(r'Parser key "([\w.]+)":\s*(.*)', message, re.S)
    if m:
        detail = " ".join(m.group(2).split())
        return f"config field '{m.group(1)}': {detail}"
    return " ".join(message.split())


# -- semantic validation -------------------------------------------------------------

def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: RunConfig) -> None:
    """Check ranges and every registered name/argument. Raises ``ConfigError`` naming the field."""
    d, t, o = cfg.data, cfg.trainer, cfg.optim
    _check(d.dataset is not None or d.path is not None,
           "data: give either data.dataset (a bundled data set name) or data.path (a measurement file)")
    _check(d.patch_size >= 4, f"data.patch_size must be >= 4, got {d.patch_size}")
    _check(d.num_patches >= 2, f"data.num_patches must be >= 2, got {d.num_patches}")
    _check(d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}")
    _check(0.0 < d.val_fraction < 1.0, f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    _check(d.num_workers >= 0, f"data.num_workers must be >= 0, got {d.num_workers}")
    _check(o.lr > 0, f"optim.lr must be > 0, got {o.lr}")
    _check(o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    _check(t.max_steps == -1 or t.max_steps > 0, f"trainer.max_steps must be -1 or > 0, got {t.max_steps}")
    _check(t.max_steps > 0 or (t.max_epochs is not None and t.max_epochs > 0),
           "trainer: set trainer.max_steps > 0 or trainer.max_epochs > 0")
    _check(t.checkpoint_every >= 1, f"trainer.checkpoint_every must be >= 1, got {t.checkpoint_every}")
    _check(t.early_stopping_patience >= 0,
           f"trainer.early_stopping_patience must be >= 0, got {t.early_stopping_patience}")
    _check(len(cfg.losses) >= 1, "losses: give at least one loss, e.g. [{name: sure}]")
    try:
        registry.validate("physics", cfg.physics.name, physics_args(cfg), "physics")
        registry.validate("noise", cfg.physics.noise.name, cfg.physics.noise.args, "physics.noise")
        registry.validate("backbone", cfg.model.backbone.name, cfg.model.backbone.args, "model.backbone")
        registry.resolve("model", cfg.model.reconstructor.name, "model.reconstructor")
        for i, loss in enumerate(cfg.losses):
            registry.validate("loss", loss.name, loss.args, f"losses.{i}")
    except registry.RegistryError as e:
        raise ConfigError(str(e)) from None
    try:
        from selfinv.training.auto_noise import IMAGE_DOMAIN_PHYSICS, auto_noise_args

        auto = auto_noise_args(cfg.physics.noise.name, cfg.physics.noise.args)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if auto:  # ``sigma: auto`` / ``gain: auto``: estimated from the measurements (training/auto_noise.py)
        _check(d.path is not None, f"physics.noise.args.{auto[0]}: 'auto' estimates the noise level from "
               "measurements, so it needs data.path (a measurement file, e.g. from 'selfinv simulate')")
        _check(cfg.physics.name in IMAGE_DOMAIN_PHYSICS,
               f"physics.noise.args.{auto[0]}: 'auto' needs image-domain measurements (physics one of "
               f"{IMAGE_DOMAIN_PHYSICS}), got '{cfg.physics.name}'")
    if cfg.select_by == "val/psnr":
        _check(d.path is None or d.dataset is not None,
               "select_by: 'val/psnr' needs ground truth; use a bundled data set or keep 'val/loss'")


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


# -- the parser ------------------------------------------------------------------------

_INDEXED = re.compile(r"^--(losses)\.(\d+)\.([\w.]+)$")


def parse_run_config(argv: Sequence[str], config_path: str | None = None) -> RunConfig:
    """Parse ``--config run.yaml`` plus dotted overrides into a validated ``RunConfig``.

    ``--losses.<i>.<field> value`` overrides one entry of the loss list (values
    are read as YAML scalars).
    """
    from jsonargparse import ArgumentParser

    argv = list(argv)
    indexed: list[tuple[str, int, list[str], Any]] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        key, eq, val = a.partition("=")
        m = _INDEXED.match(key)
        if m:
            if not eq:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{a} needs a value")
                val = argv[i + 1]
                i += 1
            indexed.append((m.group(1), int(m.group(2)), m.group(3).split("."), yaml.safe_load(val)))
        else:
            rest.append(a)
        i += 1

    from jsonargparse import ActionConfigFile

    parser = ArgumentParser(exit_on_error=False, prog="selfinv fit")
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(RunConfig, nested_key=None, as_group=False)
    if config_path is not None:
        _flatten_top(load_yaml(config_path), parser)  # strict key check, clear messages
        rest = ["--config", str(config_path)] + rest
    try:
        ns = parser.parse_args(rest)
        ns.pop("config", None)
        data = ns.as_dict()
        for section, idx, keys, value in indexed:
            items = data[section]
            if not 0 <= idx < len(items):
                raise ConfigError(f"--{section}.{idx}: there are only {len(items)} {section} (indices 0.."
                                  f"{len(items) - 1})")
            target = items[idx]
            for k in keys[:-1]:
                target = target.setdefault(k, {})
            target[keys[-1]] = value
        ns = parser.parse_object(data)
        cfg = parser.instantiate_classes(ns)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ConfigError(explain(str(e))) from None
    run = RunConfig(**{f.name: cfg[f.name] for f in dataclasses.fields(RunConfig)})
    validate(run)
    return run


def _flatten_top(base: dict, parser) -> dict:
    allowed = [f.name for f in dataclasses.fields(RunConfig)]
    for key in base:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config section '{key}'{hint}; allowed sections: {allowed}")
    # validate each section's keys strictly before handing it to jsonargparse
    out = {}
    for key, value in base.items():
        _check_keys(value, [key])
        out[key] = value
    return out


def _check_keys(value: Any, path: list[str]) -> None:
    allowed = _fields_at(path)
    if allowed is None:
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_keys(v, path + [str(i)])
        return
    if not isinstance(value, dict):
        if value is not None and path[-1] != "devices":
            raise ConfigError(f"config field '{'.'.join(path)}' must be a mapping with fields {allowed}, "
                              f"got {type(value).__name__} {value!r}")
        return
    for k, v in value.items():
        if k not in allowed:
            raise ConfigError(_unknown_key_message(path + [str(k)]))
        if k != "args":
            _check_keys(v, path + [str(k)])
