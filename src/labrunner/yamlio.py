"""YAML in and out: safe loading that remembers lines and rejects duplicate keys and bombs.

Plans are written by hand, so a duplicate key (which PyYAML silently resolves to the last value)
is an error, and every mapping remembers the line of each key so that validation errors can
point at it. Records are written by the pipeline and must never be seen half-written: every
write goes through `labrunner.files.atomic_write_text`.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from labrunner import parsed
from labrunner.errors import InputError, Issue
from labrunner.files import atomic_write_text

try:  # libyaml's parser and emitter are 5-10x faster; fall back where PyYAML was built without it
    from yaml import CSafeDumper as _Dumper
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeDumper as _Dumper  # type: ignore[assignment]
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

__all__ = ["YamlList", "YamlMap", "as_written", "atomic_write_text", "dump_yaml", "line_of", "load_yaml",
           "load_yaml_cached", "plain_copy", "write_yaml"]


class YamlMap(dict):  # type: ignore[type-arg]
    """A dict that knows the 1-based line of itself and of each of its keys."""

    line: int | None = None
    key_lines: dict[Any, int]


class YamlList(list):  # type: ignore[type-arg]
    """A list that knows its line, the line of each item, and how each plain item was written:
    `[1.10, 1.1]` are two ids to a person, one number to YAML."""

    line: int | None = None
    item_lines: list[int]
    texts: list[str | None]  # the source text of each plain (unquoted) scalar item, else None


def as_written(items: Any) -> Any:
    """A list's items as the file spells them, where YAML read a plain item as a number, a
    boolean or null (`1.10`, `on`, `~`); names must not change on the way in."""
    if not isinstance(items, YamlList):
        return items
    return [text if text is not None and not isinstance(item, str) else item
            for item, text in zip(items, items.texts)]


class _LineLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """A safe loader (C parser, Python constructor) that builds YamlMaps and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> YamlMap:  # type: ignore[override]
        written = {id(key_node) for key_node, _ in node.value}
        self.flatten_mapping(node)  # `<<: *defaults`: the merged pairs come first, and may be overridden
        mapping = YamlMap()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        merged: set[Any] = set()
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key_node, yaml.ScalarNode) and not key_node.style and not isinstance(key, str):
                key = key_node.value  # a key is a name: `on:` is "on", `1.10:` is "1.10", not True and 1.1
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found a key that is not a plain value", key_node.start_mark,
                )
            if key in mapping and key not in merged:
                first = mapping.key_lines[key]
                raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
            (merged.discard if id(key_node) in written else merged.add)(key)
            mapping[key] = self.construct_object(value_node, deep=deep)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping

    def construct_yaml_list(self, node: yaml.SequenceNode) -> Iterator[YamlList]:
        items = YamlList()
        items.line = node.start_mark.line + 1
        yield items  # first, so that an alias inside the list can refer to it
        items.extend(self.construct_sequence(node))
        items.item_lines = [child.start_mark.line + 1 for child in node.value]
        items.texts = [child.value if isinstance(child, yaml.ScalarNode) and not child.style else None
                       for child in node.value]

    may_alias = True  # False when the text has no anchor (`&name`), so no alias can repeat one

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        if self.may_alias:  # a walk over every node: a tenth of loading a large plan
            _check_expansion(node)
        return self.construct_document(node)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _LineLoader.construct_yaml_list)
# YAML 1.1 reads `1e-4` (no dot) as a string; people mean the number, as YAML 1.2 says.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_LineLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first_line: int, line: int) -> None:
        self.key, self.first_line, self.line = key, first_line, line


# Aliases let a few lines stand for billions of values ("billion laughs"): the plan would pass
# validation and then take gigabytes and minutes in every job that reads it. No plan needs this.
MAX_ALIAS_EXPANSION = 100_000  # values that aliases may add to a document


class _TooManyAliases(Exception):
    def __init__(self, line: int, expanded: int, recursive: bool = False) -> None:
        self.line, self.expanded, self.recursive = line, expanded, recursive


def _check_expansion(root: yaml.Node) -> None:
    """Count the values the document holds once every alias is expanded, without expanding any:
    a node reached again through an alias counts its whole size again."""
    sizes: dict[int, int] = {}  # id(node) -> values in it, aliases expanded
    on_path: set[int] = set()
    expansion = 0

    def size(node: yaml.Node) -> int:
        nonlocal expansion
        key = id(node)
        if key in on_path:  # an alias to a node that contains it: infinitely deep
            raise _TooManyAliases(node.start_mark.line + 1, 0, recursive=True)
        if key in sizes:  # an alias: the values are repeated where it stands
            expansion += sizes[key]
            if expansion > MAX_ALIAS_EXPANSION:
                raise _TooManyAliases(node.start_mark.line + 1, expansion)
            return sizes[key]
        on_path.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        total = 1 + sum(size(child) for child in children)
        on_path.discard(key)
        sizes[key] = total
        return total

    size(root)


def load_yaml(path: Path, error: type[InputError] = InputError) -> Any:
    """Load a YAML file safely; raise `error` naming the file and line for anything wrong."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error.single(shown, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error.single(shown, "", f"cannot be read: {exc}") from None
    return parse_yaml(text, shown, error)


# absolute path -> (text, data) for load_yaml_cached
_DATA_CACHE: dict[str, tuple[str, Any]] = {}
_DATA_CACHE_MAX = 10_000


def load_yaml_cached(path: Path, error: type[InputError] = InputError) -> Any:
    """load_yaml for the files labrunner writes and reads again in the same process (each
    experiment's results.yaml is read by its FINDINGS job, the project FINDINGS job and the end of
    the run): parsed once while its text is the same (the text, as records.read_record compares
    it: two writes within one tick of the clock can leave a file's inode, time and size as they
    were), and each caller gets its own copy, as plain dicts and lists (no line numbers)."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error.single(shown, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error.single(shown, "", f"cannot be read: {exc}") from None
    key = os.path.abspath(path)
    cached = _DATA_CACHE.get(key)
    if cached is not None and cached[0] == text:
        return plain_copy(cached[1])
    data = parsed.lookup("yaml", text)
    if data is parsed.MISSING:
        data = plain_copy(parse_yaml(text, shown, error))
        parsed.remember("yaml", text, data)
    if len(_DATA_CACHE) >= _DATA_CACHE_MAX:
        _DATA_CACHE.clear()
    _DATA_CACHE[key] = (text, data)
    return plain_copy(data)


def plain_copy(data: Any) -> Any:
    """A copy of loaded YAML data that shares nothing a caller could change: mappings and lists
    copied (as plain dicts and lists), scalars kept as they cannot change, anything else deep-
    copied. Several times quicker than copy.deepcopy, which would eat much of what a cache saves."""
    if isinstance(data, dict):
        return {key: plain_copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [plain_copy(value) for value in data]
    if data is None or type(data) in (str, int, float, bool):
        return data
    return copy.deepcopy(data)


def parse_yaml(text: str, shown: str, error: type[InputError] = InputError) -> Any:
    """Parse YAML text that came from the file named `shown` (used in messages only)."""
    try:
        loader = _LineLoader(text)
        loader.may_alias = "&" in text
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _TooManyAliases as bomb:
        what = ("an alias here refers to the value that contains it, which would never end" if bomb.recursive else
                f"aliases (*name) expand the document by more than {MAX_ALIAS_EXPANSION:,} values (an alias of the "
                "anchor here took it past that); a plan never needs this: write the values out, or fewer nested aliases")
        raise error([Issue(shown, "", what, bomb.line)]) from None
    except _DuplicateKey as dup:
        key = _key_path_at(text, dup.line) or str(dup.key)
        raise error([Issue(shown, key, f"duplicate key (first defined on line {dup.first_line})", dup.line)]) from None
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        problem = exc.problem or "unsupported YAML"
        if "could not determine a constructor" in problem:
            problem += " (plans and records are loaded safely: Python tags are not allowed)"
        raise error([Issue(shown, "", problem, line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
        raise error([Issue(shown, "", message, line)]) from None


def _key_path_at(text: str, line: int) -> str | None:
    """The dotted path of the mapping key on `line` (1-based): the loader that found a duplicate
    key is deep inside the document and does not know where it is."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None

    def find(node: yaml.Node, path: tuple[str, ...]) -> tuple[str, ...] | None:
        children: list[tuple[str, yaml.Node]] = []
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.start_mark.line + 1 == line:
                    return (*path, str(key_node.value))
                children.append((str(key_node.value), value_node))
        elif isinstance(node, yaml.SequenceNode):
            children = [(str(index), item) for index, item in enumerate(node.value)]
        for name, child in children:
            found = find(child, (*path, name))
            if found:
                return found
        return None

    found = find(node, ()) if node is not None else None
    return ".".join(found) if found else None


def line_of(data: Any, path: tuple[Any, ...]) -> int | None:
    """The line of the deepest key along `path` that the loaded data still knows."""
    line = getattr(data, "line", None)
    node = data
    for key in path:
        if isinstance(node, YamlMap) and key in node:
            line = node.key_lines.get(key, line)
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            line = node.item_lines[key] if isinstance(node, YamlList) else line
            node = node[key]
            line = getattr(node, "line", line)
        elif isinstance(node, YamlList) and isinstance(key, str):  # `sub_experiments: [a, b]`, named by id
            found = _named_item(node, key)
            if found is None:
                break
            node, line = found
        else:
            break
    return line


def _named_item(items: YamlList, name: str) -> tuple[Any, int] | None:
    """The item of a list of ids (`a`, or `a: {settings}`) named `name`, and its line."""
    for item, text, line in zip(items, as_written(items), items.item_lines):
        if isinstance(item, YamlMap) and len(item) == 1 and name in item:
            return item[name], item.key_lines[name]
        if str(text) == name:
            return item, line
    return None


def _represent_float(dumper: yaml.SafeDumper, value: float) -> yaml.ScalarNode:
    # PyYAML writes 1e-05 as "1e-05", which YAML 1.1 loaders read back as a string.
    if math.isnan(value):
        text = ".nan"
    elif math.isinf(value):
        text = ".inf" if value > 0 else "-.inf"
    else:
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
    return dumper.represent_scalar("tag:yaml.org,2002:float", text)


class _RecordDumper(_Dumper):  # type: ignore[misc, valid-type]
    """Dumps plain data; keeps key order; long strings (tracebacks) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not any(c in value for c in "\t\r") else None
    if style and any(line != line.rstrip() for line in value.splitlines()):
        style = None  # literal blocks cannot hold trailing spaces faithfully
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


# ... and so the dumper quotes a string spelled like one (a run id such as `6697979726e9`), which
# would otherwise be written plain and read back as a float.
_RecordDumper.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))
_RecordDumper.add_representer(float, _represent_float)
_RecordDumper.add_representer(str, _represent_str)
_RecordDumper.add_representer(YamlMap, _RecordDumper.represent_dict)
_RecordDumper.add_representer(YamlList, _RecordDumper.represent_list)


def dump_yaml(data: Mapping[str, Any] | list[Any]) -> str:
    return yaml.dump(data, Dumper=_RecordDumper, sort_keys=False, allow_unicode=True, width=100)


def write_yaml(path: Path, data: Mapping[str, Any] | list[Any]) -> None:
    atomic_write_text(path, dump_yaml(data))
