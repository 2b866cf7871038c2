"""Give freed heap memory back to the system after a session let go of a large buffer.

A partial line can hold up to 64 MiB per direction in chunks of the read size. Freed, those
chunks go back to glibc's malloc, which keeps them for reuse instead of returning them, so
lunad's RSS stays at its peak after the sessions that caused it are gone. `malloc_trim(0)`
returns the free pages (glibc >= 2.8 also releases those in the middle of the heap). It costs
a walk of the heap, so the session calls it only after releasing at least TRIM_AFTER bytes.
Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

TRIM_AFTER = 8 * 1024 * 1024  # bytes a session must have released to be worth a trim


def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return free heap memory to the system; True if glibc did release some."""
    return bool(_TRIM(0)) if _TRIM is not None else False
