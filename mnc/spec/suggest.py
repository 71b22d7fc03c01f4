"""'Did you mean' suggestions for misspelt names."""
from __future__ import annotations

import difflib


def did_you_mean(word: str, choices, synonyms: dict[str, str] | None = None) -> str:
    word = word.lower()
    if synonyms and synonyms.get(word) in choices:
        return f"; did you mean '{synonyms[word]}'?"
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def one_of(choices) -> str:
    return ", ".join(f"'{c}'" for c in sorted(choices))
