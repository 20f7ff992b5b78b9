"""The only bridge from configuration names to selfinv classes.

A config names a component as ``{name: <registered name>, args: {...}}``. The
name is looked up here (never imported from a user-supplied dotted path), the
class is imported lazily from inside the ``selfinv`` package, and ``args`` are
checked against the class's signature before anything is built. Nothing that is
not listed below can be reached from a config: adding a class is one line.

Nested components are built from the argument's *name*: an argument called
``transform``, ``backbone``, ``prior`` or ``noise`` (or ``transforms``, a list)
given as ``{name: ..., args: ...}`` is built from the matching category.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import typing
from typing import Any, Mapping

from selfinv import options
from selfinv.options import ConfigError

#: category -> registered name -> "module:attribute" inside selfinv
_REGISTRY: dict[str, dict[str, str]] = {
    "physics": {
        "denoising": "selfinv.physics.base:Denoising",
        "inpainting": "selfinv.physics.inpainting:Inpainting",
        "mri": "selfinv.physics.mri:MRI",
        "mri_multicoil": "selfinv.physics.mri_multicoil:MultiCoilMRI",
        "tomography": "selfinv.physics.tomography:Tomography",
        "beer_lambert_ct": "selfinv.physics.tomography:BeerLambertCT",
        "blur": "selfinv.physics.blur:Blur",
        "downsampling": "selfinv.physics.downsampling:Downsampling",
        "compressed_sensing": "selfinv.physics.compressed_sensing:CompressedSensing",
    },
    "noise": {
        "none": "selfinv.physics.noise:NoNoise",
        "unknown": "selfinv.physics.noise:UnknownNoise",
        "gaussian": "selfinv.physics.noise:GaussianNoise",
        "colored_gaussian": "selfinv.physics.noise:ColoredGaussianNoise",
        "poisson": "selfinv.physics.noise:PoissonNoise",
        "poisson_gaussian": "selfinv.physics.noise:PoissonGaussianNoise",
        "gamma": "selfinv.physics.noise:GammaNoise",
    },
    "loss": {
        "supervised": "selfinv.losses.supervised:SupervisedLoss",
        "mc": "selfinv.losses.consistency:MeasurementConsistency",
        "sure": "selfinv.losses.sure:SURE",
        "r2r": "selfinv.losses.r2r:R2R",
        "unsure": "selfinv.losses.unsure:UNSURE",
        "noise2noise": "selfinv.losses.noise2noise:Noise2Noise",
        "splitting": "selfinv.losses.splitting:SplittingLoss",
        "neighbor2neighbor": "selfinv.losses.neighbor2neighbor:Neighbor2Neighbor",
        "noise2score": "selfinv.losses.noise2score:Noise2Score",
        "ssdu": "selfinv.losses.ssdu:SSDUSplitting",
        "moi": "selfinv.losses.moi:MultiOperatorImaging",
        "ei": "selfinv.losses.equivariant:EquivariantImaging",
        "robust_ei": "selfinv.losses.robust_ei:RobustEquivariantImaging",
        "scale_ei": "selfinv.losses.scale_equivariant:ScaleEquivariantImaging",
        "blindspot": "selfinv.losses.blindspot:BlindSpotLoss",
        "autoencoder": "selfinv.losses.autoencoder:AutoencoderLoss",
    },
    "backbone": {
        "unet": "selfinv.models.unet:UNet",
        "dncnn": "selfinv.models.dncnn:DnCNN",
        "blindspot_net": "selfinv.models.blindspot:BlindSpotNet",
        "autoencoder": "selfinv.models.autoencoder:BottleneckAutoencoder",
    },
    "model": {
        "back_projection": "selfinv.models.reconstructor:BackProjection",
        "unrolled": "selfinv.models.unrolled:UnrolledProximalGradient",
    },
    "transform": {
        "shift": "selfinv.transforms.shift:Shift",
        "rotate": "selfinv.transforms.rotate:Rotate",
        "reflect": "selfinv.transforms.reflect:Reflect",
        "scale": "selfinv.transforms.scale:Scale",
        "compose": "selfinv.transforms.compose:Compose",
    },
}

#: argument names that hold a nested component, and the category it is built from
_NESTED: dict[str, str] = {
    "transform": "transform",
    "transforms": "transform",
    "backbone": "backbone",
    "prior": "backbone",
    "noise": "noise",
    "tomography": "physics",
    "fidelity": "loss",
    "sure": "loss",
    "noisy_term": "loss",
}


class RegistryError(ConfigError):
    """A config named an unregistered component or gave it arguments it does not take."""


def categories() -> list[str]:
    """The component categories a config can name."""
    return sorted(_REGISTRY)


def names(category: str) -> list[str]:
    """All names registered in ``category`` (importable or not yet)."""
    _check_category(category)
    return sorted(_REGISTRY[category])


def available(category: str) -> list[str]:
    """The registered names of ``category`` whose class can be imported now."""
    out = []
    for n in names(category):
        try:
            resolve(category, n)
        except RegistryError:
            continue
        out.append(n)
    return out


def register(category: str, name: str, target: str) -> None:
    """Register ``name`` -> ``"selfinv.module:Attribute"`` (selfinv modules only)."""
    _check_category(category)
    if not target.startswith("selfinv.") or ":" not in target:
        raise RegistryError(f"registry targets must be 'selfinv.<module>:<Class>', got '{target}'")
    _REGISTRY[category][name] = target


def _check_category(category: str) -> None:
    if category not in _REGISTRY:
        raise RegistryError(f"unknown component category '{category}'; expected one of {sorted(_REGISTRY)}")


def resolve(category: str, name: str, where: str | None = None) -> type:
    """The class registered as ``name`` in ``category`` (imported lazily)."""
    _check_category(category)
    where = where or category
    table = _REGISTRY[category]
    if not isinstance(name, str) or name not in table:
        close = difflib.get_close_matches(str(name), table, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RegistryError(
            f"{where}.name: unknown {category} '{name}'{hint}; registered names: {sorted(table)}"
        )
    module_name, attr = table[name].split(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise RegistryError(
            f"{where}.name: {category} '{name}' is registered as {table[name]} but cannot be "
            f"imported in this installation ({type(e).__name__}: {e})"
        ) from e


def _own_signature(cls: type) -> inspect.Signature:
    """``cls``'s constructor signature; a class that does not define one (``nn.Module``'s
    ``(*args, **kwargs)``) takes no arguments."""
    sig = inspect.signature(cls)
    params = list(sig.parameters.values())
    if params and all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return sig.replace(parameters=[])
    return sig


def accepted_args(cls: type) -> list[str]:
    """Keyword arguments accepted by ``cls`` (from its signature)."""
    return [p.name for p in _own_signature(cls).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _argument_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: values are then only checked to be plain
        return {}


def _config_value(value: Any, tp: Any, where: str) -> Any:
    """Types a config cannot express as plain data: tensors come from numbers or nested lists of numbers;
    modules, generators and callables cannot be given at all (nested components go through the registry)."""
    import torch

    if isinstance(tp, type) and issubclass(tp, torch.Tensor):
        if isinstance(value, bool) or not isinstance(value, (int, float, list)):
            raise ConfigError(f"{where}: expected a number or a (nested) list of numbers, got "
                              f"{type(value).__name__} {value!r}"[:200])
        try:
            return torch.tensor(value, dtype=torch.float32)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: expected a number or a rectangular list of numbers ({e})") from None
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{where}: cannot be given in a config (it takes a {name} object)")


def check_args(cls: type, args: Mapping[str, Any], where: str, supplied: tuple[str, ...] = ()) -> dict[str, Any]:
    """``args`` checked against ``cls``'s signature and converted to the annotated types.

    Raises ``RegistryError`` naming the field for an unknown or missing argument or a value of the
    wrong type. Arguments holding a nested component (``_NESTED``) are validated through the
    registry and returned unchanged (``build`` builds them). ``supplied`` names arguments the engine
    passes itself (a reconstructor's backbone): they count as given and may not appear in ``args``.
    """
    if not isinstance(args, Mapping):
        raise RegistryError(f"{where}.args must be a mapping of argument names to values, "
                            f"got {type(args).__name__}")
    params = _own_signature(cls).parameters
    accepted = accepted_args(cls)
    for key in args:
        if key in supplied:
            raise RegistryError(f"{where}.args.{key}: set by selfinv (e.g. from model.backbone), not in args")
        if key not in accepted:
            close = difflib.get_close_matches(str(key), accepted, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RegistryError(
                f"{where}.args.{key}: {cls.__name__} has no argument '{key}'{hint}; "
                f"accepted arguments: {accepted}"
            )
    missing = [p.name for p in params.values()
               if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in args and p.name not in supplied]
    if missing:
        raise RegistryError(f"{where}.args: {cls.__name__} needs argument(s) {missing}; "
                            f"accepted arguments: {accepted}")
    hints = _argument_types(cls)
    out: dict[str, Any] = {}
    for key, value in args.items():
        sub = f"{where}.args.{key}"
        if key in _NESTED and (_is_component(value) or (
                isinstance(value, list) and value and all(_is_component(v) for v in value))):
            for i, v in enumerate(value if isinstance(value, list) else [value]):
                at = f"{sub}[{i}]" if isinstance(value, list) else sub
                validate(_NESTED[key], v["name"], v.get("args"), at)
            out[key] = value
            continue
        try:
            out[key] = options.convert(value, hints.get(key, Any), sub, convert_other=_config_value)
        except ConfigError as e:
            raise RegistryError(str(e)) from None
    return out


def _is_component(value: Any) -> bool:
    return isinstance(value, Mapping) and "name" in value and set(value) <= {"name", "args"}


def _build_nested(key: str, value: Any, where: str) -> Any:
    category = _NESTED.get(key)
    if category is None:
        return value
    if _is_component(value):
        return build(category, value["name"], value.get("args") or {}, where=f"{where}.args.{key}")
    if isinstance(value, list) and value and all(_is_component(v) for v in value):
        return [build(category, v["name"], v.get("args") or {}, where=f"{where}.args.{key}[{i}]")
                for i, v in enumerate(value)]
    return value


def build(category: str, name: str, args: Mapping[str, Any] | None = None, where: str | None = None,
          **extra: Any) -> Any:
    """Instantiate the component ``name`` of ``category`` with ``args`` (validated first).

    ``extra`` are arguments supplied by the engine (e.g. the backbone of a
    reconstructor); they are not part of the user's ``args``.
    """
    where = where or category
    cls = resolve(category, name, where)
    args = check_args(cls, dict(args or {}), where, supplied=tuple(extra))
    kwargs = {k: _build_nested(k, v, where) for k, v in args.items()}
    try:
        return cls(**kwargs, **extra)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"{where}: building {category} '{name}' ({cls.__name__}) failed: {e}") from e


def validate(category: str, name: str, args: Mapping[str, Any] | None, where: str,
             supplied: tuple[str, ...] = ()) -> None:
    """Check a component spec without building it (nested specs included)."""
    check_args(resolve(category, name, where), dict(args or {}), where, supplied)
