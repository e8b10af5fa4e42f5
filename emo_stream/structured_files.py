"""The one reader for YAML and JSON files a user hands the project.

Configs, dataset manifests and ``--option`` values come from users, so reading
them must never hang, exhaust memory or end in a traceback. ``yaml.safe_load``
and ``json.loads`` alone do not guarantee that: a YAML alias bomb (nine lines
that expand to a billion nodes once anything walks them), ``[[[[...]]]]``
thousands deep (``RecursionError``), a FIFO passed as a path (``open`` blocks
forever), a 2 GiB file, or Latin-1 bytes (``UnicodeDecodeError``). Every entry
point here refuses those with one :class:`~emo_stream.errors.ConfigError` that
names the file (or ``where``) and what is wrong.

Limits (keyword arguments override them per call):

* ``max_bytes`` (default 4 MiB): configs and manifests are kilobytes; a
  multi-megabyte "config" is a wrong path, not a config.
* ``max_depth`` (default 64): nesting of mappings/sequences; real files need < 10.
* ``max_nodes`` (default 1,000,000): YAML nodes *after* alias expansion, so
  ordinary anchors (``<<: *defaults``) keep working while a bomb is refused
  before anything walks it. Recursive aliases (``&a [*a]``) are refused.

Duplicate keys in one mapping are refused too (YAML and JSON both keep the
last one silently, so ``hop_s`` written twice would hide a mistake), and JSON's
non-standard ``NaN``/``Infinity`` are refused (no config number may be
non-finite).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from emo_stream.errors import ConfigError

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 1_000_000

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "parse_json_text",
    "parse_yaml_text",
    "read_json",
    "read_text",
    "read_yaml",
]


# -- files ------------------------------------------------------------------------
def read_text(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES, what: str = "file") -> str:
    """UTF-8 text of a regular file of at most ``max_bytes``, or a ConfigError.

    The file type is checked before opening so a FIFO or device path cannot
    block the process; the read is capped so a file that grows meanwhile
    cannot either. A UTF-8 byte-order mark is dropped.
    """
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {p} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{what} {p} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {p} is not a regular file (a FIFO, socket or device cannot be read as one)")
    if st.st_size > max_bytes:
        raise ConfigError(f"{what} {p} is {st.st_size} bytes; more than the {max_bytes}-byte limit for such files")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {p} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"{what} {p} is more than the {max_bytes}-byte limit for such files")
    return decode_utf8(raw, f"{what} {p}")


def decode_utf8(raw: bytes, where: str) -> str:
    """``raw`` as UTF-8 (BOM dropped), or a ConfigError naming the first bad byte's offset."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def read_yaml(path: str | os.PathLike[str], *, what: str = "file", max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """Parse a YAML file safely (see the module docstring for the limits); an empty file gives None."""
    p = Path(path).expanduser()
    text = read_text(p, max_bytes=max_bytes, what=what)
    return parse_yaml_text(text, f"{what} {p}", max_depth=max_depth, max_nodes=max_nodes)


def read_json(path: str | os.PathLike[str], *, what: str = "file", max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON file safely (size, depth, duplicate keys, no NaN/Infinity)."""
    p = Path(path).expanduser()
    text = read_text(p, max_bytes=max_bytes, what=what)
    return parse_json_text(text, f"{what} {p}", max_depth=max_depth)


# -- YAML -------------------------------------------------------------------------
class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that bounds nesting while composing and refuses duplicate keys.

    The depth check runs in ``compose_node`` (PyYAML's recursive step), so a
    10,000-deep document is refused at depth ``max_depth`` instead of hitting
    Python's recursion limit.
    """

    max_depth = MAX_DEPTH
    where = "YAML"

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()
        nests = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        self._depth += nests
        try:
            if self._depth > self.max_depth:
                raise ConfigError(f"{self.where} is nested more than {self.max_depth} levels deep (line {event.start_mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= nests

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` keys may be overridden: that is what merging is for
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise ConfigError(f"{self.where}: key {key!r} appears twice in one mapping (lines {seen[key]} and {line})")
                seen[key] = line
            except TypeError:
                continue  # unhashable key: SafeLoader itself reports it
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: Node, where: str, max_nodes: int) -> int:
    """Nodes in the document with every alias expanded, without expanding it.

    Shared nodes (anchors) are counted once per reference through memoisation,
    so the count is exact yet costs only the number of distinct nodes; a node
    that contains itself (a recursive alias) is refused.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # Iterative post-order walk: (node, children_done).
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            if isinstance(node, SequenceNode):
                total = 1 + sum(sizes[id(c)] for c in node.value)
            elif isinstance(node, MappingNode):
                total = 1 + sum(sizes[id(k)] + sizes[id(v)] for k, v in node.value)
            else:
                total = 1
            if total > max_nodes:
                raise ConfigError(f"{where} expands to more than {max_nodes} values (a YAML alias bomb?); refusing it")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigError(f"{where} has a recursive YAML alias (a value that contains itself)")
        on_path.add(key)
        stack.append((node, True))
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for kv in node.value for n in kv]
        else:
            children = []
        for child in children:
            if id(child) in on_path:
                raise ConfigError(f"{where} has a recursive YAML alias (a value that contains itself)")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def parse_yaml_text(text: str, where: str = "YAML", *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES, max_chars: int = MAX_BYTES) -> Any:
    """Parse YAML ``text`` with the limits of :func:`read_yaml`; ``where`` names it in errors.

    Use this for YAML that does not come from a file (``--option key=VALUE``
    values, a config embedded in a message): ``where`` is then e.g.
    ``"--option publish_transcript"``.
    """
    if len(text) > max_chars:
        raise ConfigError(f"{where} is longer than the {max_chars}-character limit")
    loader_cls = type("_Loader", (_LimitedLoader,), {"max_depth": max_depth, "where": where})
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, where, max_nodes)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML: {problem}{at}") from None
    except RecursionError:  # belt and braces: the depth limit should always trigger first
        raise ConfigError(f"{where} is nested too deeply") from None
    finally:
        loader.dispose()


# -- JSON -------------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


def _json_depth_ok(value: Any, where: str, max_depth: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            if d > max_depth:
                raise ConfigError(f"{where} is nested more than {max_depth} levels deep")
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))


def parse_json_text(text: str, where: str = "JSON", *, max_depth: int = MAX_DEPTH, max_chars: int = MAX_BYTES) -> Any:
    """Parse one JSON document (e.g. one JSONL line) with the limits of :func:`read_json`."""
    if len(text) > max_chars:
        raise ConfigError(f"{where} is longer than the {max_chars}-character limit")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"key {k!r} appears twice in one object")
            out[k] = v
        return out

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested more than {max_depth} levels deep") from None
    except ValueError as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}") from None
    _json_depth_ok(value, where, max_depth)
    return value
