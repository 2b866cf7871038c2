"""Timestamps: timezone-aware UTC ISO 8601 out; naive (legacy, local) ones read as UTC.

The original server mixed naive local and UTC timestamps. Ours writes only aware UTC ones, and
orders memories by an integer microsecond key so that old naive and new aware timestamps sort
together, identically in the file and the Redis paths.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_now() -> str:
    return utc_now().isoformat(timespec="microseconds")


def parse_timestamp(text: str) -> datetime | None:
    """An aware datetime, naive ones taken as UTC; None when `text` is not ISO 8601."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def sort_key_us(text: str) -> int:
    """Microseconds since the epoch (0 for an unreadable timestamp), the retrieval tie-break."""
    moment = parse_timestamp(text)
    if moment is None:
        return 0
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
