"""Adding entries to a hand-written research_plan.yaml without disturbing it.

A plan is the researcher's file: its comments, blank lines, quoting and flow or block style are
theirs. So an edit inserts text and changes nothing else: every line of the file before the edit
is in the file after it, byte for byte, with the new lines placed by the positions that PyYAML's
composer reports (a dump of the loaded data would lose every comment). Block collections get new
lines at the indentation of their siblings; flow collections (`[a, b]`, `{a: 1}`) get the entry
before their closing bracket; an empty or null value (`experiments: {}`) becomes a block, the
one case where an existing line changes (`experiments: {}` -> `experiments:`, comment kept).
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from labrunner.errors import PlanError

__all__ = ["Entry", "add_entry", "child_node", "mapping_keys"]

INDENT_STEP = 2  # for a block whose siblings show no indentation step of their own


@dataclass(frozen=True)
class Entry:
    """One entry to add under `key`: its value as flow text (`{params: {}}`), or as block lines
    (nested lines indented by INDENT_STEP per level, re-indented to the file's own step). In a
    list, the entry is the key alone: `sub_experiments: [a, b]` lists ids."""

    key: str
    flow: str
    block: tuple[str, ...] = ()

    def block_lines(self, in_list: bool) -> list[str]:
        if in_list:
            return [self.key]
        if not self.block:
            return [f"{self.key}: {self.flow}"]
        return [f"{self.key}:", *(" " * INDENT_STEP + line for line in self.block)]

    def flow_text(self, in_list: bool) -> str:
        return self.key if in_list else f"{self.key}: {self.flow}"


def compose(text: str, shown: str) -> yaml.MappingNode:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PlanError.single(shown, "", f"YAML syntax error: {getattr(exc, 'problem', exc)}",
                               mark.line + 1 if mark else None) from None
    if not isinstance(root, yaml.MappingNode):
        raise PlanError.single(shown, "", "expected a mapping with an 'experiments' key at the top level")
    return root


def mapping_keys(node: yaml.Node) -> list[str]:
    return [str(key.value) for key, _ in node.value] if isinstance(node, yaml.MappingNode) else []


def child_node(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """(key node, value node) of `key` in a mapping node, or None."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if str(key_node.value) == key:
                return key_node, value_node
    return None


def _is_empty(node: yaml.Node) -> bool:
    """A value that holds nothing yet: `key:`, `key: null`, `key: ~`, `key: {}`, `key: []`."""
    if isinstance(node, yaml.ScalarNode):
        return node.tag == "tag:yaml.org,2002:null"
    return isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.value


def _last_line(node: yaml.Node, key_line: int) -> int:
    """The 0-based line where the text of `node` (the value of a key on `key_line`) ends."""
    if isinstance(node, yaml.ScalarNode):
        if node.start_mark.index == node.end_mark.index:
            return key_line  # `key:` with nothing after it
        end = node.end_mark
        return end.line if end.column > 0 else end.line - 1  # block scalars end after their newline
    if node.flow_style or not node.value:
        return node.end_mark.line
    if isinstance(node, yaml.MappingNode):
        last_key, last_value = node.value[-1]
        return _last_line(last_value, last_key.start_mark.line)
    last_item = node.value[-1]
    return _last_line(last_item, last_item.start_mark.line)


def _block_indent(lines: list[str], node: yaml.Node, key_node: yaml.Node) -> tuple[int, int]:
    """(column of the new entry, indentation step of its nested lines)."""
    if isinstance(node, yaml.MappingNode) and node.value and not node.flow_style:
        column = node.value[0][0].start_mark.column
        nested = node.value[0][1]
        step = (nested.value[0][0].start_mark.column - column
                if isinstance(nested, yaml.MappingNode) and nested.value and not nested.flow_style else INDENT_STEP)
        return column, max(step, 1)
    if isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
        line = lines[node.value[0].start_mark.line]
        return len(line) - len(line.lstrip(" ")), INDENT_STEP  # the column of the dash
    return key_node.start_mark.column + INDENT_STEP, INDENT_STEP


def add_entry(text: str, shown: str, parent_key: yaml.Node, value: yaml.Node, entry: Entry) -> str:
    """`text` with `entry` added to the collection `value` (the value of `parent_key`)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if isinstance(value, (yaml.MappingNode, yaml.SequenceNode)) and value.flow_style and value.value:
        close = value.end_mark.index - 1
        if text[close] not in "]}":
            raise PlanError.single(shown, str(parent_key.value), "cannot find the closing bracket of this flow collection",
                                   value.end_mark.line + 1)
        return text[:close] + ", " + entry.flow_text(isinstance(value, yaml.SequenceNode)) + text[close:]
    if not _is_empty(value) and not isinstance(value, (yaml.MappingNode, yaml.SequenceNode)):
        raise PlanError.single(shown, str(parent_key.value), f"expected a mapping or a list, got {value.value!r}",
                               value.start_mark.line + 1)
    column, step = _block_indent(lines, value, parent_key)
    in_list = isinstance(value, yaml.SequenceNode) and bool(value.value)  # an empty `[]` becomes a mapping
    if _is_empty(value):
        lines = _cut_empty_value(lines, value)
        after = parent_key.start_mark.line
    else:
        after = _last_line(value, parent_key.start_mark.line)
    block = entry.block_lines(in_list)
    new = [" " * column + ("- " if in_list else "") + block[0] + "\n"]
    for line in block[1:]:
        depth = (len(line) - len(line.lstrip(" "))) // INDENT_STEP
        new.append(" " * (column + depth * step) + line.lstrip(" ") + "\n")
    return "".join(lines[: after + 1] + new + lines[after + 1:])


def _cut_empty_value(lines: list[str], value: yaml.Node) -> list[str]:
    """Remove the text of an empty value (`{}`, `[]`, `null`, `~`) from its line, keeping any
    comment after it: the block that replaces it starts on the next line."""
    if value.start_mark.index == value.end_mark.index:
        return lines
    line_no = value.start_mark.line
    line = lines[line_no]
    start, end = value.start_mark.column, value.end_mark.column if value.end_mark.line == line_no else len(line)
    rest = line[end:]
    head = line[:start].rstrip(" ")
    comment = rest.strip()
    lines = list(lines)
    lines[line_no] = head + (("  " + comment) if comment else "") + "\n"
    return lines
