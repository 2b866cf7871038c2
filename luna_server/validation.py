"""Input validation: every tool argument is checked here before anything runs or is written.

Each check raises `InputError` with a message that starts "Error:", names the parameter and
says what is allowed. The MCP layer (`server`) turns it into a tool error (`isError: true`).
This module does not import the MCP SDK, so the engines and the store stay usable without it.
"""

from __future__ import annotations

import json
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


def json_object(name: str, value: Any) -> dict[str, Any]:
    text = check_string(name, value)
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"Error: parameter '{name}' is not valid JSON ({exc.msg} at position "
                         f"{exc.pos}); allowed: a JSON object such as {{\"source\": \"chat\"}}"
                         ) from None
    if not isinstance(parsed, dict):
        raise InputError(f"Error: parameter '{name}' is a JSON {type(parsed).__name__}; "
                         "allowed: a JSON object such as {\"source\": \"chat\"}")
    return parsed


def known_arguments(tool: str, arguments: dict[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        names = ", ".join(allowed) if allowed else "none"
        raise InputError(f"Error: unknown parameter(s) {', '.join(unknown)} for {tool}; "
                         f"allowed parameters: {names}")
    for key, value in arguments.items():
        check_string(key, value)
