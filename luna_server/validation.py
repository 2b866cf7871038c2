"""Input validation: every tool argument is checked here before anything runs or is written.

Each check raises `InputError` with a message that starts "Error:", names the parameter and
says what is allowed. The MCP layer (`server`) turns it into a tool error (`isError: true`).
This module does not import the MCP SDK, so the engines and the store stay usable without it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

MAX_TEXT = 100_000


class InputError(ValueError):
    """A caller's argument was not acceptable; the message is the client-facing text."""


def check_string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InputError(f"Error: parameter '{name}' must be a string, got "
                         f"{type(value).__name__} ({json.dumps(value)[:80]})")
    if len(value) > MAX_TEXT:
        raise InputError(f"Error: parameter '{name}' is {len(value)} characters long; "
                         f"at most {MAX_TEXT} characters are allowed")
    return value


def required_text(name: str, value: Any) -> str:
    text = check_string(name, value)
    if not text.strip():
        raise InputError(f"Error: parameter '{name}' is required: a non-empty string "
                         f"(at most {MAX_TEXT} characters)")
    return text


def choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    text = check_string(name, value).strip().lower()
    if text not in allowed:
        raise InputError(f"Error: parameter '{name}' is {value!r}; allowed values: "
                         + ", ".join(allowed))
    return text


def int_in_range(name: str, value: Any, low: int, high: int) -> int:
    text = check_string(name, value).strip()
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise InputError(f"Error: parameter '{name}' is {value!r}; allowed: an integer from "
                         f"{low} to {high}")
    return number


MAX_DEPTH = 32
"""Nesting levels a JSON parameter (metadata) may have: plenty for metadata, and far from the
recursion limits of the JSON parsers and writers that handle it after us."""

EXAMPLE_OBJECT = 'a JSON object such as {"source": "chat"}'


def _refuse_constant(name: str) -> Any:
    def refuse(constant: str) -> Any:
        raise InputError(f"Error: parameter '{name}' contains {constant}, which is not JSON "
                         "(strict parsers reject it); allowed: finite numbers, strings, true, "
                         "false, null, arrays and objects")
    return refuse


def _finite_float(name: str) -> Any:
    def parse(literal: str) -> float:
        number = float(literal)
        if math.isinf(number):
            raise InputError(f"Error: parameter '{name}' has the number {literal[:40]}, too "
                             "large for a 64-bit float (it would be written as Infinity, "
                             "which is not JSON); allowed: numbers up to about 1.8e308")
        return number
    return parse


def _check_tree(name: str, value: Any) -> None:
    """Depth and text of a parsed JSON value, without recursion (it may be deep)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise InputError(f"Error: parameter '{name}' is nested more than {MAX_DEPTH} "
                                 f"levels deep; allowed: {EXAMPLE_OBJECT}, at most {MAX_DEPTH} "
                                 "levels of objects and arrays")
            children = list(item.items()) if isinstance(item, dict) else [(None, v)
                                                                           for v in item]
            for key, child in children:
                if key is not None:
                    stack.append((key, depth))
                stack.append((child, depth + 1))
        elif isinstance(item, str) and any("\ud800" <= ch <= "\udfff" for ch in item):
            raise InputError(f"Error: parameter '{name}' contains a lone surrogate escape "
                             "(\\ud800-\\udfff not in a pair), which is not Unicode text; "
                             "allowed: valid UTF-8 text or paired escapes")


def json_object(name: str, value: Any) -> dict[str, Any]:
    text = check_string(name, value)
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text, parse_constant=_refuse_constant(name),
                            parse_float=_finite_float(name))
    except json.JSONDecodeError as exc:
        raise InputError(f"Error: parameter '{name}' is not valid JSON ({exc.msg} at position "
                         f"{exc.pos}); allowed: {EXAMPLE_OBJECT}") from None
    except RecursionError:
        raise InputError(f"Error: parameter '{name}' is nested more than {MAX_DEPTH} levels "
                         f"deep; allowed: {EXAMPLE_OBJECT}, at most {MAX_DEPTH} levels of "
                         "objects and arrays") from None
    if not isinstance(parsed, dict):
        raise InputError(f"Error: parameter '{name}' is a JSON {type(parsed).__name__}; "
                         f"allowed: {EXAMPLE_OBJECT}")
    _check_tree(name, parsed)
    return parsed


def known_arguments(tool: str, arguments: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        names = ", ".join(allowed) if allowed else "none"
        raise InputError(f"Error: unknown parameter(s) {', '.join(unknown)} for {tool}; "
                         f"allowed parameters: {names}")
    for key, value in arguments.items():
        check_string(key, value)
