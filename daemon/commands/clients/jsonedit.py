"""Editing one member of a JSON (or JSONC) object in place, leaving every other byte alone.

Client config files are the user's: other servers, settings, indentation, key order and, in
VS Code / Zed / Gemini files, comments and trailing commas. Re-serialising the whole document
would lose comments and reformat everything, so edits here are surgical: `parse` returns the
value *and* where each object member sits in the text, and `set_member` / `remove_member`
splice only the text of the one member they change.

`parse(text, jsonc=True)` accepts `//` and `/* */` comments and trailing commas (JSONC, as
VS Code and Zed read their settings); with `jsonc=False` it accepts exactly JSON (the files of
Claude Desktop, Cursor, ...). Errors are `JsonSyntaxError` with the line and column.

Every edit is checked afterwards by parsing the result and comparing the value with the one
intended (`verified`): if the splice went wrong in some corner of the syntax, the caller gets
an error and the user's file is not written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from json.decoder import scanstring
from typing import Any

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERALS = {"true": True, "false": False, "null": None}
BOM = "\ufeff"


class JsonSyntaxError(ValueError):
    """The text is not valid JSON (JSONC); says what and where, 1-based line and column."""

    def __init__(self, msg: str, text: str, pos: int) -> None:
        self.msg = msg
        self.pos = pos
        self.lineno = text.count("\n", 0, pos) + 1
        self.colno = pos - (text.rfind("\n", 0, pos) + 1) + 1
        super().__init__(f"{msg} at line {self.lineno} column {self.colno}")


@dataclass
class Node:
    """A parsed value and its text span [start, end); for objects, its members in order."""

    value: Any
    start: int
    end: int
    members: list[Member] = field(default_factory=list)

    def member(self, key: str) -> Member | None:
        """The member a JSON reader sees under `key` (the last one, if repeated)."""
        found = [m for m in self.members if m.key == key]
        return found[-1] if found else None


@dataclass
class Member:
    key: str
    key_start: int
    node: Node


class _Parser:
    def __init__(self, text: str, jsonc: bool) -> None:
        self.text = text
        self.jsonc = jsonc

    def fail(self, msg: str, pos: int) -> JsonSyntaxError:
        return JsonSyntaxError(msg, self.text, pos)

    def skip(self, pos: int) -> int:
        """Past whitespace, and in JSONC past comments."""
        text = self.text
        while pos < len(text):
            ch = text[pos]
            if ch in " \t\r\n":
                pos += 1
            elif self.jsonc and text.startswith("//", pos):
                end = text.find("\n", pos)
                pos = len(text) if end < 0 else end + 1
            elif self.jsonc and text.startswith("/*", pos):
                end = text.find("*/", pos + 2)
                if end < 0:
                    raise self.fail("Unterminated comment", pos)
                pos = end + 2
            else:
                break
        return pos

    def value(self, pos: int) -> Node:
        text = self.text
        pos = self.skip(pos)
        if pos >= len(text):
            raise self.fail("Expecting value", pos)
        ch = text[pos]
        if ch == "{":
            return self.obj(pos)
        if ch == "[":
            return self.array(pos)
        if ch == '"':
            try:
                string, end = scanstring(text, pos + 1, True)
            except json.JSONDecodeError as exc:
                raise self.fail(exc.msg, exc.pos) from None
            return Node(string, pos, end)
        for word, literal in _LITERALS.items():
            if text.startswith(word, pos):
                return Node(literal, pos, pos + len(word))
        match = _NUMBER.match(text, pos)
        if match:
            number = match.group()
            value = float(number) if any(c in number for c in ".eE") else int(number)
            return Node(value, pos, match.end())
        raise self.fail("Expecting value", pos)

    def obj(self, start: int) -> Node:
        text = self.text
        node = Node({}, start, start)
        pos = self.skip(start + 1)
        comma = -1
        while True:
            if pos < len(text) and text[pos] == "}":
                if comma >= 0 and not self.jsonc:
                    raise self.fail("Illegal trailing comma before end of object", comma)
                node.end = pos + 1
                return node
            if pos >= len(text) or text[pos] != '"':
                raise self.fail("Expecting property name enclosed in double quotes", pos)
            try:
                key, after_key = scanstring(text, pos + 1, True)
            except json.JSONDecodeError as exc:
                raise self.fail(exc.msg, exc.pos) from None
            colon = self.skip(after_key)
            if colon >= len(text) or text[colon] != ":":
                raise self.fail("Expecting ':' delimiter", colon)
            child = self.value(colon + 1)
            node.members.append(Member(key, pos, child))
            node.value[key] = child.value
            pos = self.skip(child.end)
            comma = -1
            if pos < len(text) and text[pos] == ",":
                comma = pos
                pos = self.skip(pos + 1)
            elif pos >= len(text) or text[pos] != "}":
                raise self.fail("Expecting ',' delimiter", pos)

    def array(self, start: int) -> Node:
        text = self.text
        items: list[Any] = []
        pos = self.skip(start + 1)
        comma = -1
        while True:
            if pos < len(text) and text[pos] == "]":
                if items and comma >= 0 and not self.jsonc:
                    raise self.fail("Illegal trailing comma before end of array", comma)
                return Node(items, start, pos + 1)
            child = self.value(pos)
            items.append(child.value)
            pos = self.skip(child.end)
            comma = -1
            if pos < len(text) and text[pos] == ",":
                comma = pos
                pos = self.skip(pos + 1)
            elif pos >= len(text) or text[pos] != "]":
                raise self.fail("Expecting ',' delimiter", pos)



def parse(text: str, *, jsonc: bool) -> Node:
    """The document's root node; raises JsonSyntaxError naming line and column."""
    parser = _Parser(text, jsonc)
    start = len(BOM) if text.startswith(BOM) else 0
    root = parser.value(start)
    end = parser.skip(root.end)
    if end != len(text):
        raise parser.fail("Extra data", end)
    return root


# ---------------------------------------------------------------- splicing


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _indent_of_line(text: str, pos: int) -> str:
    start = _line_start(text, pos)
    return text[start:start + len(text[start:]) - len(text[start:].lstrip(" \t"))]


def _starts_line(text: str, pos: int) -> bool:
    return text[_line_start(text, pos):pos].strip(" \t") == ""


def indent_unit(text: str) -> str:
    """The file's indentation step: the first indented line's leading whitespace, else 2."""
    for line in text.splitlines():
        stripped = line.lstrip(" \t")
        if stripped and len(stripped) < len(line):
            lead = line[:len(line) - len(stripped)]
            return "\t" if lead.startswith("\t") else " " * min(len(lead), 8)
    return "  "


def _render(value: Any, indent: str, unit: str) -> str:
    """`value` as JSON whose continuation lines start at `indent` (unit = one level)."""
    return json.dumps(value, indent=unit, ensure_ascii=False).replace("\n", "\n" + indent)


def _comma_after(parser: _Parser, pos: int, closing: int) -> int | None:
    """Position of the comma following a member that ends at `pos`, if there is one."""
    after = parser.skip(pos)
    return after if after < closing and parser.text[after] == "," else None


def insert_member(text: str, obj: Node, key: str, value: Any, *, jsonc: bool) -> str:
    """`text` with `"key": value` added as the last member of the object `obj`."""
    parser = _Parser(text, jsonc)
    closing = obj.end - 1  # the "}"
    unit = indent_unit(text)
    if not obj.members:
        outer = _indent_of_line(text, obj.start)
        inner = outer + unit
        member = f"{json.dumps(key)}: {_render(value, inner, unit)}"
        return f"{text[:obj.start + 1]}\n{inner}{member}\n{outer}{text[closing:]}"
    last = obj.members[-1]
    if not _starts_line(text, last.key_start):  # a one-line object: stay on one line
        member = f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}"
        comma = _comma_after(parser, last.node.end, closing)
        if comma is not None:  # trailing comma kept after the new member too
            return f"{text[:comma + 1]} {member},{text[comma + 1:]}"
        return f"{text[:last.node.end]}, {member}{text[last.node.end:]}"
    inner = _indent_of_line(text, last.key_start)
    member = f"{json.dumps(key)}: {_render(value, inner, unit)}"
    comma = _comma_after(parser, last.node.end, closing)
    # After the last thing before "}" (a value, a comma, or a comment that follows them).
    tail = closing
    while tail > 0 and text[tail - 1] in " \t\r\n":
        tail -= 1
    if comma is not None:
        return f"{text[:tail]}\n{inner}{member},{text[tail:]}"
    head = text[:last.node.end] + "," + text[last.node.end:tail]
    return f"{head}\n{inner}{member}{text[tail:]}"


def replace_value(text: str, node: Node, value: Any) -> str:
    """`text` with the value spanned by `node` replaced, indented like the line it is on."""
    indent = _indent_of_line(text, node.start)
    return text[:node.start] + _render(value, indent, indent_unit(text)) + text[node.end:]


def delete_member(text: str, obj: Node, index: int, *, jsonc: bool) -> str:
    """`text` without the object's member number `index` (and the comma that separated it).

    Comments around it are kept, except one at the end of its own line."""
    parser = _Parser(text, jsonc)
    closing = obj.end - 1
    member = obj.members[index]
    comma = _comma_after(parser, member.node.end, closing)
    start = member.key_start
    end = comma + 1 if comma is not None else member.node.end
    # The last member takes the comma before it instead (unless the object keeps trailing
    # commas, i.e. there was one after it).
    before = (_comma_after(parser, obj.members[index - 1].node.end, closing)
              if comma is None and index > 0 else None)
    if not _starts_line(text, start):  # one line: no doubled or dangling blanks either
        if index > 0:
            while text[start - 1] in " \t":
                start -= 1
        else:
            while end < len(text) and text[end] in " \t":
                end += 1
    else:
        rest = text[end:].split("\n", 1)
        line_rest = rest[0]
        if jsonc and line_rest.lstrip(" \t").startswith("//"):
            line_rest = ""  # its end-of-line comment goes with it
        if line_rest.strip(" \t\r") == "" and len(rest) == 2:
            start = _line_start(text, start)
            end += len(rest[0]) + 1
    text = text[:start] + text[end:]
    if before is not None:
        text = text[:before] + text[before + 1:]
    if len(obj.members) == 1:  # now empty: "{}" rather than a brace on each line
        inner = text[obj.start + 1:closing - (end - start) - (before is not None)]
        if not inner.strip():
            text = text[:obj.start + 1] + text[obj.start + 1 + len(inner):]
    return text


# ---------------------------------------------------------------- what callers use


def set_member(text: str, root: Node, container: str, name: str, value: Any, *,
               jsonc: bool) -> str:
    """`text` with root[container][name] = value; the container is created when missing."""
    holder = root.member(container)
    if holder is None:
        return insert_member(text, root, container, {name: value}, jsonc=jsonc)
    existing = holder.node.member(name)
    if existing is None:
        return insert_member(text, holder.node, name, value, jsonc=jsonc)
    return replace_value(text, existing.node, value)


def remove_member(text: str, root: Node, container: str, name: str, *, jsonc: bool) -> str:
    """`text` without root[container][name] (every occurrence, should the key repeat)."""
    holder = root.member(container)
    if holder is None:
        return text
    # From the last occurrence back, so the earlier spans stay valid.
    for index in reversed([i for i, m in enumerate(holder.node.members) if m.key == name]):
        text = delete_member(text, holder.node, index, jsonc=jsonc)
        holder = parse(text, jsonc=jsonc).member(container)
        assert holder is not None
    return text


def verified(new_text: str, expected: Any, *, jsonc: bool, source: str) -> str:
    """`new_text` if it parses to `expected`; otherwise a ValueError and nothing is written."""
    try:
        got = parse(new_text, jsonc=jsonc).value
    except JsonSyntaxError as exc:
        got = exc
    if got != expected:
        raise ValueError(f"{source}: editing it in place did not give the intended document "
                         f"({got!r}); nothing was changed, edit the file by hand")
    return new_text
