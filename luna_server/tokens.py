"""Tokens and keyword presence, the one text model every Luna engine shares.

A text's tokens are the lowercased runs of letters, digits and apostrophes (Unicode letters
included). A keyword or keyphrase is *present* when its tokens occur contiguously in the text's
tokens, where a text token matches a keyword token that it equals or that it equals followed by
"s" ("patterns" matches "pattern"). Whole tokens only: "no" does not match "know" (the original
server's substring tests did).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_TOKEN_RE = re.compile(r"(?:[^\W_]|')+")


def tokenize(text: str) -> list[str]:
    """The lowercased tokens of `text`, in order."""
    return _TOKEN_RE.findall(text.lower())


def token_matches(text_token: str, keyword_token: str) -> bool:
    """True when a text token stands for a keyword token (itself, or its plain plural)."""
    return text_token == keyword_token or text_token == keyword_token + "s"


def phrase_present(text_tokens: Sequence[str], phrase_tokens: Sequence[str]) -> bool:
    """True when `phrase_tokens` occur contiguously in `text_tokens` (plural rule applied)."""
    n = len(phrase_tokens)
    if n == 0 or n > len(text_tokens):
        return False
    first = phrase_tokens[0]
    for start in range(len(text_tokens) - n + 1):
        if token_matches(text_tokens[start], first) and all(
            token_matches(text_tokens[start + i], phrase_tokens[i]) for i in range(1, n)
        ):
            return True
    return False


def keyword_present(text_tokens: Sequence[str], keyword: str) -> bool:
    """True when a keyword or keyphrase (plain text, tokenized here) is present."""
    return phrase_present(text_tokens, tokenize(keyword))


def count_present(text_tokens: Sequence[str], keywords: Iterable[str]) -> int:
    """How many of `keywords` are present (each counts once, however often it occurs)."""
    return sum(1 for keyword in keywords if keyword_present(text_tokens, keyword))


def count_occurrences(text_tokens: Sequence[str], keyword: str) -> int:
    """How many text tokens stand for the single-token `keyword`."""
    return sum(1 for token in text_tokens if token_matches(token, keyword))
