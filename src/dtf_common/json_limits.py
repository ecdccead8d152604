"""Limits on the free-form JSON that clients and workers send, so that whatever is
accepted can always be stored, read back and served again.

One check for both doors: the REST schemas (`dtf_common.schemas`) run `check_json` on
parsed bodies; the WorkerService (`dtf_coordinator.rpc.wire`) runs `parse_json_object`
on the JSON text a worker sends. Both raise `InvalidArgument` naming the field; the
error's `reason` context is a machine-readable cause (the REST 422's `errors[].type`).

What is refused, and why:

- nesting deeper than `MAX_JSON_DEPTH` (objects and arrays, the outermost counted):
  recursive encoders give up on deep documents (the API's response encoder near 250
  levels, `json.dumps` near 1000), so every page holding one would fail;
- more encoded bytes than the field's limit;
- a string (key or value) that is not valid Unicode: a lone surrogate such as `"\\ud800"`
  parses, but cannot be encoded as UTF-8 to answer with;
- NaN and Infinity, which are not JSON: strict encoders (the API's) refuse them;
- integers outside signed 64 bits, which most JSON readers cannot hold exactly.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from dtf_common.errors import InvalidArgument

KiB = 1024
MiB = 1024 * KiB
MAX_JSON_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# A key shown as `.key` in a path; any other is shown quoted and escaped: `["a b"]`.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_MAX_PATH_CHARS = 200
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # in JSON text: a surrogate, paired or not

# A path to a value, built only when a check fails: (parent trail, key or index).
Trail = tuple[Any, str | int] | None


def check_json(value: Any, *, field: str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise `InvalidArgument(field=field)` unless `value`, as parsed from JSON, is within
    the limits. Its size is that of its compact encoding, as the coordinator stores it."""
    try:
        text = json.dumps(value, separators=(",", ":"))  # ASCII: a lone surrogate is escaped
    except RecursionError:
        _too_deep(field, max_depth)
    except (TypeError, ValueError):  # not JSON data (a date from YAML...): the walk names it
        _walk(value, field, max_depth)
        _refuse(field, f"{field} is not JSON data", "json_type")
    _check_text(text, field, max_bytes, max_depth)


def parse_json_object(text: str, *, field: str, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """The JSON object `text` holds, checked against the limits; empty text is {}.
    Raises `InvalidArgument(field=field)`."""
    if not text:
        return {}
    value = _check_text(text, field, max_bytes, max_depth)
    if not isinstance(value, dict):
        _refuse(field, f"{field} must be a JSON object, not {_kind(value)}", "json_not_object")
    return value


def _check_text(text: str, field: str, max_bytes: int, max_depth: int) -> Any:
    """Parse `text` once, its numbers checked as they are read; walk the value only where
    the text could hold a nesting past the limit or a surrogate escape. Most documents
    pass on C-speed scans alone."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        _refuse(field, f"{field} is not valid Unicode (it holds a lone surrogate)", "string_unicode")
    if size > max_bytes:
        _too_large(field, size, max_bytes)
    try:
        value = json.loads(text, parse_int=_int64, parse_float=_finite, parse_constant=_finite)
    except RecursionError:
        _too_deep(field, max_depth)
    except _BadNumber as exc:
        _walk(_lenient(text), field, max_depth)  # to name where it is
        _refuse(field, f"{field} holds {exc}", exc.reason)
    except ValueError as exc:  # JSONDecodeError
        _refuse(field, f"{field} is not valid JSON: {_message(exc)}", "json_invalid")
    nesting = text.count("{") + text.count("[")
    if nesting > max_depth or ("\\u" in text and _SURROGATE_ESCAPE.search(text)):
        _walk(value, field, max_depth)
    return value


class _BadNumber(ValueError):
    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _int64(digits: str) -> int:
    # Checked on the digits: int() itself refuses more than 4300 of them.
    if len(digits.lstrip("-")) > 19 or not INT64_MIN <= (value := int(digits)) <= INT64_MAX:
        raise _BadNumber("an integer outside the signed 64-bit range", "int_range")
    return value


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # NaN, Infinity, or a literal too large for a float (1e999)
        raise _BadNumber("a number that is not finite", "finite_number")
    return value


def _lenient(text: str) -> Any:
    """`text` parsed with Python's own leniency (NaN, any integer), or None."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _walk(root: Any, field: str, max_depth: int) -> None:
    """Check every value under `root` without recursion (a deep document must not
    exhaust the stack that is checking it)."""
    stack: list[tuple[Any, int, Trail]] = [(root, 0, None)]
    while stack:
        value, depth, trail = stack.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                _refuse(field, f"{_path(field, trail)} is not valid Unicode (a lone surrogate)", "string_unicode")
        elif value is None or isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                _refuse(field, f"{_path(field, trail)} is outside the signed 64-bit integer range", "int_range")
        elif isinstance(value, float):
            if not math.isfinite(value):
                _refuse(field, f"{_path(field, trail)} is not a finite number", "finite_number")
        elif isinstance(value, dict):
            if depth >= max_depth:
                _too_deep(field, max_depth)
            for key, item in value.items():
                if isinstance(key, str) and not _is_unicode(key):
                    _refuse(field, f"a key of {_path(field, trail)} is not valid Unicode", "string_unicode")
                if not isinstance(key, str | int | float | None):  # json.dumps writes those as text
                    _refuse(field, f"a key of {_path(field, trail)} is not a string", "json_type")
                stack.append((item, depth + 1, (trail, str(key))))
        elif isinstance(value, list | tuple):
            if depth >= max_depth:
                _too_deep(field, max_depth)
            stack.extend((item, depth + 1, (trail, index)) for index, item in enumerate(value))
        else:
            _refuse(field, f"{_path(field, trail)} is a {type(value).__name__}, not a JSON value", "json_type")


def _is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _path(field: str, trail: Trail) -> str:
    """`parameters.x[1]`: where a value sits, keys escaped so the path itself is valid text."""
    parts: list[str] = []
    while trail is not None:
        trail, step = trail
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _PLAIN_KEY.fullmatch(step):
            parts.append(f".{step}")
        else:
            parts.append(f"[{json.dumps(step[:64])}]")  # ensure_ascii escapes a lone surrogate
    path = field + "".join(reversed(parts))
    return path if len(path) <= _MAX_PATH_CHARS else path[: _MAX_PATH_CHARS - 3] + "..."


def _message(exc: ValueError) -> str:
    return exc.msg + f" at position {exc.pos}" if isinstance(exc, json.JSONDecodeError) else str(exc)


def _kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _too_deep(field: str, max_depth: int) -> NoReturn:
    _refuse(field, f"{field} is nested deeper than {max_depth} levels", "json_too_deep")


def _too_large(field: str, size: int, max_bytes: int) -> NoReturn:
    _refuse(field, f"{field} is {size} bytes encoded, over the limit of {max_bytes}", "json_too_large")


def _refuse(field: str, message: str, reason: str) -> NoReturn:
    raise InvalidArgument(message, field=field, reason=reason)
