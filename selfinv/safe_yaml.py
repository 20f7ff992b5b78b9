"""YAML for configs and command-line values: plain data only, bounded in size.

Configs and checkpoints are *data*. ``load_text`` / ``load_file`` parse YAML with
PyYAML's safe constructors (no Python tags) and then refuse anything that is not
plain data: the result holds only ``None``, ``bool``, ``int``, ``float``,
``str``, lists and mappings with string keys (no dates, sets or binary). On top
of that:

* duplicated mapping keys are an error (YAML would silently keep the last one);
* at most ``MAX_ALIASES`` aliases (``*name``) and ``MAX_NODES`` nodes after
  alias expansion (an "alias bomb" of a few hundred bytes expands to billions);
* at most ``MAX_BYTES`` of text and ``MAX_DEPTH`` levels of nesting.

Example::

    >>> load_text("{sigma: 0.1, sizes: [1, 2]}")
    {'sigma': 0.1, 'sizes': [1, 2]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20
MAX_ALIASES = 64
MAX_NODES = 100_000
MAX_DEPTH = 32


class YamlError(ValueError):
    """Text that is not a plain-data YAML document within the limits."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts aliases and refuses duplicated keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise YamlError(f"more than {MAX_ALIASES} YAML aliases (*name): refused")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise YamlError(f"line {key_node.start_mark.line + 1}: a mapping key must be a scalar")
            if key in seen:
                raise YamlError(f"line {key_node.start_mark.line + 1}: key '{key}' appears twice in the "
                                f"same mapping; remove one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_plain(value: Any, where: str, depth: int, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise YamlError(f"more than {MAX_NODES} values after expanding aliases: refused")
    if depth > MAX_DEPTH:
        raise YamlError(f"{where}: nested deeper than {MAX_DEPTH} levels: refused")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]", depth + 1, budget)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise YamlError(f"{where}: mapping keys must be strings, got {type(k).__name__} {k!r}")
            _check_plain(v, f"{where}.{k}" if where else k, depth + 1, budget)
        return
    raise YamlError(f"{where or 'value'}: only plain values (numbers, strings, booleans, null, lists, "
                    f"mappings) are allowed, got {type(value).__name__} {value!r}")


def check_plain(value: Any, where: str = "") -> Any:
    """Return ``value`` if it is plain data within the limits, else raise ``YamlError``."""
    _check_plain(value, where, 0, [MAX_NODES])
    return value


def load_text(text: str, source: str = "value") -> Any:
    """Parse one YAML document of plain data (see the module docstring)."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise YamlError(f"{source}: larger than {MAX_BYTES} bytes: refused")
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    except YamlError as e:
        raise YamlError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise YamlError(f"{source}: not valid YAML{at}: {problem}") from None
    finally:
        loader.dispose()
    try:
        check_plain(data)
    except YamlError as e:
        raise YamlError(f"{source}: {e}") from None
    return data


def load_file(path: str | Path) -> Any:
    """``load_text`` of a file (size checked before reading)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    if p.stat().st_size > MAX_BYTES:
        raise YamlError(f"{p}: larger than {MAX_BYTES} bytes: refused")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise YamlError(f"{p}: not a text (UTF-8) file") from None
    return load_text(text, str(p))
