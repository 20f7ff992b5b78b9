"""Typed options from plain data: dataclass configs, function signatures and the command line over them.

selfinv's configs and command-line options are generated from type hints (the
``RunConfig`` dataclasses of ``selfinv.config`` and the signatures of the
command functions). This module is the whole mechanism, and it is deliberately
closed: values are plain YAML data (``selfinv.safe_yaml``), converted to the
declared types (``int``, ``float``, ``bool``, ``str``, ``Literal``,
``Optional``/unions, lists, tuples, ``dict[str, ...]``, nested dataclasses)
and nothing else. No value can name a class or a module to import: unlike
general-purpose parsers, there is no ``class_path`` resolution at any depth.

Command-line syntax: ``--section.field VALUE`` or ``--section.field=VALUE``;
list entries by index (``--losses.0.name sure``); the value is read as a YAML
scalar or flow collection (``--physics.args '{acceleration: 8}'``) except for
string-typed options, which take the text as it is; a boolean option given
without a value is ``true``.

Example::

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Opt:
    ...     lr: float = 1e-3
    ...     steps: int = 10
    >>> build_dataclass(Opt, {"lr": "1e-4"})
    Opt(lr=0.0001, steps=10)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Literal, Union

from selfinv import safe_yaml


class ConfigError(ValueError):
    """A config field or option is missing, misspelled, of the wrong type or out of range."""


_NONE_WORDS = ("null", "none", "~", "")


# -- type descriptions -----------------------------------------------------------------------

def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def describe(tp: Any) -> str:
    """A short human name of a type: ``int``, ``float or null``, ``one of ['a', 'b']``, ``list of int``."""
    if tp is Any:
        return "any plain value"
    if tp is type(None):
        return "null"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return f"one of {list(args)}"
    if _is_union(tp):
        names = [describe(a) for a in args if a is not type(None)]
        if len(names) == 2 and names[1] == "number or list of numbers" and names[0] == "number":
            names = names[1:]  # float | Tensor
        return " or ".join(dict.fromkeys(names + (["null"] if type(None) in args else [])))
    if origin in (list, Sequence, typing.Sequence) or tp in (list, Sequence):
        return f"list of {describe(args[0])}" if args else "list"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {describe(args[0])}"
        return f"list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if tp is float:
        return "number"
    if tp is int:
        return "integer"
    if tp is bool:
        return "true or false"
    if tp in (str, Path):
        return "string"
    if getattr(tp, "__name__", "") == "Tensor":
        return "number or list of numbers"
    return getattr(tp, "__name__", str(tp))


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
            type(None): "null"}.get(type(value), type(value).__name__)
    return f"{kind} {text}"


def _fail(where: str, tp: Any, value: Any, extra: str = "") -> ConfigError:
    return ConfigError(f"{where}: expected {describe(tp)}, got {_got(value)}{extra}")


# -- conversion --------------------------------------------------------------------------------

def convert(value: Any, tp: Any, where: str, *, convert_other: Callable[[Any, Any, str], Any] | None = None) -> Any:
    """``value`` (plain data) as type ``tp``, or ``ConfigError`` naming ``where``, the expected type and the value.

    ``convert_other(value, tp, where)`` handles types this module does not know (the registry uses it
    for tensors); without it such a type is an error.
    """
    if tp is Any or tp is object:
        return safe_yaml.check_plain(value, where)
    if tp is type(None):
        if value is None:
            return None
        raise _fail(where, tp, value)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        if value is None:
            if type(None) in args:
                return None
            raise _fail(where, tp, value)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(value, a, where, convert_other=convert_other)
            except ConfigError as e:
                errors.append(e)
        raise _fail(where, tp, value)
    if origin is Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise _fail(where, tp, value, hint)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(where, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(where, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        raise _fail(where, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(where, tp, value)
    if tp is Path:
        if isinstance(value, str):
            return value
        raise _fail(where, tp, value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build_dataclass(tp, value, where)
    if origin in (list, Sequence, typing.Sequence) or tp in (list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise _fail(where, tp, value)
        item = args[0] if args else Any
        return [convert(v, item, f"{where}[{i}]", convert_other=convert_other) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(where, tp, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{where}[{i}]", convert_other=convert_other)
                         for i, v in enumerate(value))
        if args and len(value) != len(args):
            raise _fail(where, tp, value, f" ({len(value)} values)")
        return tuple(convert(v, a, f"{where}[{i}]", convert_other=convert_other)
                     for i, (v, a) in enumerate(zip(value, args or [Any] * len(value), strict=True)))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _fail(where, tp, value)
        kt, vt = (args + (Any, Any))[:2] if args else (Any, Any)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: keys must be strings, got {_got(k)}")
            out[k] = convert(v, vt, f"{where}.{k}", convert_other=convert_other)
        return out
    if convert_other is not None:
        return convert_other(value, tp, where)
    raise ConfigError(f"{where}: cannot be set from a config (it takes a {describe(tp)})")


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def unknown_key(where: str, key: str, allowed: Sequence[str], what: str = "config field") -> ConfigError:
    """The error for an unknown ``key`` at ``where``, with a did-you-mean hint and the allowed names."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    dotted = f"{where}.{key}" if where else key
    return ConfigError(f"unknown {what} '{dotted}'{hint}; allowed here: {sorted(allowed)}")


def build_dataclass(cls: type, data: Any, where: str = "") -> Any:
    """An instance of dataclass ``cls`` from a mapping: unknown keys, missing fields and wrong types are
    ``ConfigError`` naming the dotted field."""
    types_ = field_types(cls)
    if not isinstance(data, Mapping):
        hint = f"; a file or folder goes to --{where}.path {data}" if isinstance(data, str) and where \
            and "path" in types_ else ""
        raise ConfigError(f"{where or cls.__name__}: expected a mapping with fields {list(types_)}, got "
                          f"{_got(data)}{hint}")
    for key in data:
        if key not in types_:
            raise unknown_key(where, str(key), list(types_), "config field" if where else "config section")
    kwargs = {}
    for f in dataclasses.fields(cls):
        sub = f"{where}.{f.name}" if where else f.name
        if f.name in data:
            kwargs[f.name] = convert(data[f.name], types_[f.name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{sub}: required ({describe(types_[f.name])}), but not given")
    return cls(**kwargs)


def to_plain(obj: Any) -> Any:
    """A dataclass (or nested containers of them) as plain dicts and lists (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


# -- the command line --------------------------------------------------------------------------

def split_flags(argv: Sequence[str], is_flag_bool: Callable[[str], bool]) -> list[tuple[str, str | None]]:
    """``['--a.b', '1', '--c=x', '--flag']`` -> ``[('a.b', '1'), ('c', 'x'), ('flag', None)]``.

    A flag with no value is allowed only where ``is_flag_bool(key)`` (it then means ``true``).
    """
    out: list[tuple[str, str | None]] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--") or tok == "--":
            raise ConfigError(f"unexpected argument '{tok}': options are written --name VALUE")
        key, eq, val = tok[2:].partition("=")
        if not key:
            raise ConfigError(f"unexpected argument '{tok}'")
        if eq:
            out.append((key, val))
            i += 1
            continue
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if nxt is None or (nxt.startswith("--") and len(nxt) > 2 and not _looks_negative(nxt)):
            if is_flag_bool(key):
                out.append((key, None))
                i += 1
                continue
            raise ConfigError(f"--{key} needs a value")
        out.append((key, nxt))
        i += 2
    return out


def _looks_negative(tok: str) -> bool:
    return bool(re.fullmatch(r"-[\d.]", tok[:2]))


def _admits_none(tp: Any) -> bool:
    return tp is Any or (_is_union(tp) and type(None) in typing.get_args(tp))


def _is_text(tp: Any) -> bool:
    if tp in (str, Path):
        return True
    if _is_union(tp):
        return all(a in (str, Path, type(None)) for a in typing.get_args(tp))
    return False


def read_cli_value(raw: str | None, tp: Any, where: str) -> Any:
    """A command-line token as plain data for a field of type ``tp`` (see the module docstring)."""
    if raw is None:
        return True
    if _is_text(tp):
        if _admits_none(tp) and raw.strip().lower() in _NONE_WORDS:
            return None
        return raw
    try:
        return safe_yaml.load_text(raw, source=f"--{where}")
    except safe_yaml.YamlError as e:
        raise ConfigError(str(e)) from None


def _is_bool(tp: Any) -> bool:
    if tp is bool:
        return True
    return _is_union(tp) and bool in typing.get_args(tp)


# -- nested dataclass paths (``--trainer.max_steps``, ``--losses.0.args.tau``) -----------------------

def type_at(cls: type, path: Sequence[str]) -> Any:
    """The declared type at a dotted path inside dataclass ``cls`` (``ConfigError`` if there is none)."""
    tp: Any = cls
    walked: list[str] = []
    for part in path:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if _is_union(tp):
            non_none = [a for a in args if a is not type(None)]
            tp = non_none[0] if len(non_none) == 1 else tp
            origin, args = typing.get_origin(tp), typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            types_ = field_types(tp)
            if part not in types_:
                raise unknown_key(".".join(walked), part, list(types_), "config field" if walked else "option --")
            tp = types_[part]
        elif origin in (list, Sequence, typing.Sequence):
            if not part.isdigit():
                raise ConfigError(f"--{'.'.join(walked)}: a list; give an index, e.g. --{'.'.join(walked)}.0")
            tp = args[0] if args else Any
        elif origin in (dict, Mapping) or tp is Any:
            tp = (args[1] if len(args) == 2 else Any) if origin in (dict, Mapping) else Any
        else:
            raise ConfigError(f"--{'.'.join(walked + [part])}: '{'.'.join(walked)}' is a {describe(tp)} and "
                              f"has no field '{part}'")
        walked.append(part)
    return tp


def set_path(data: dict, path: Sequence[str], value: Any, where: str) -> None:
    """Set ``data[path[0]][path[1]]... = value``; list indices must exist, mappings are created."""
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list):
            idx = int(part)
            if not 0 <= idx < len(node):
                raise ConfigError(f"--{where}: there are only {len(node)} entries in '{'.'.join(path[:i])}' "
                                  f"(indices 0..{len(node) - 1})")
            node = node[idx]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
    last = path[-1]
    if isinstance(node, list):
        idx = int(last)
        if not 0 <= idx < len(node):
            raise ConfigError(f"--{where}: there are only {len(node)} entries (indices 0..{len(node) - 1})")
        node[idx] = value
    else:
        node[last] = value


# -- function signatures ----------------------------------------------------------------------

def parameter_types(fn: Callable, skip: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
    """``{name: (type, default)}`` of ``fn``'s parameters (``inspect.Parameter.empty`` = required)."""
    hints = typing.get_type_hints(fn)
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = (hints.get(p.name, Any), p.default)
    return out


def docstring_args(fn: Callable) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring as ``{name: one-line description}``."""
    doc = inspect.getdoc(fn) or ""
    out: dict[str, str] = {}
    in_args, current = False, None
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            if line and not line.startswith(" "):
                break
            m = re.match(r"^\s{4}([\w, ]+):\s*(.*)$", line)
            if m:
                names = [n.strip() for n in m.group(1).split(",")]
                current = names
                for n in names:
                    out[n] = m.group(2).strip()
            elif current and line.strip():
                for n in current:
                    out[n] = (out[n] + " " + line.strip()).strip()
    return out


def parse_function_args(fn: Callable, argv: Sequence[str], skip: Sequence[str] = ()) -> dict[str, Any]:
    """Keyword arguments of ``fn`` from ``--name VALUE`` flags, typed by its signature.

    Unknown flags, missing required arguments and wrong types are ``ConfigError``.
    """
    params = parameter_types(fn, skip)
    pairs = split_flags(argv, lambda k: k.replace("-", "_") in params and _is_bool(params[k.replace("-", "_")][0]))
    out: dict[str, Any] = {}
    for key, raw in pairs:
        name = key.replace("-", "_")
        if name not in params:
            raise unknown_key("", key, [n for n in params], "option --")
        if name in out:
            raise ConfigError(f"--{key} is given twice")
        tp = params[name][0]
        out[name] = convert(read_cli_value(raw, tp, key), tp, f"--{key}")
    missing = [n for n, (_, d) in params.items() if d is inspect.Parameter.empty and n not in out]
    if missing:
        raise ConfigError("missing required option(s) " + ", ".join(f"--{n}" for n in missing))
    return out


def function_help(fn: Callable, prog: str, skip: Sequence[str] = ()) -> str:
    """Usage text of a command generated from ``fn``'s signature and docstring."""
    params = parameter_types(fn, skip)
    docs = docstring_args(fn)
    summary = (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ")
    lines = [f"usage: {prog} " + " ".join(
        f"--{n} {n.upper()}" if d is inspect.Parameter.empty else f"[--{n} {n.upper()}]"
        for n, (_, d) in params.items()), "", summary, "", "options:"]
    for n, (tp, d) in params.items():
        default = "required" if d is inspect.Parameter.empty else f"default: {d!r}"
        lines.append(f"  --{n} ({describe(tp)}; {default})")
        if docs.get(n):
            lines.append(f"      {docs[n]}")
    return "\n".join(lines) + "\n"


def dataclass_help(obj: Any, prefix: str = "") -> list[str]:
    """One line per leaf field of the dataclass instance ``obj`` (nested dataclasses expanded), with
    type, default (the value in ``obj``) and help."""
    lines = []
    types_ = field_types(type(obj))
    for f in dataclasses.fields(obj):
        tp, value, name = types_[f.name], getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            lines.extend(dataclass_help(value, name + "."))
            continue
        text = f.metadata.get("help", "")
        lines.append(f"  --{name} ({describe(tp)}; default: {to_plain(value)!r})" + (f"\n      {text}" if text else ""))
    return lines
