"""Password policy (R-7.1): long enough, not a common password, not too guessable.

A pure function of the candidate, the settings and the words to avoid (the user name). The
common-password list is the 30,000 most frequent passwords that ``zxcvbn`` ships (from leaked
password corpora); its score (0-4, an estimate of guesses needed) catches what a list cannot:
keyboard walks, dates, l33t spellings, repeats and dictionary words with digits.
"""

from __future__ import annotations

from functools import cache

import zxcvbn
from zxcvbn.frequency_lists import FREQUENCY_LISTS

MAX_LENGTH = 1024  # longer input is refused, not hashed (Argon2 takes any length; we bound it)
_SCORED = 100  # zxcvbn's matching is quadratic: the first 100 characters are what it scores


@cache
def common_passwords() -> frozenset[str]:
    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(
    password: str, *, min_length: int, min_score: int, avoid: tuple[str, ...] = ()
) -> str | None:
    """Why ``password`` may not be used (one sentence), or None when it may."""
    if len(password) < min_length:
        return f"use at least {min_length} characters"
    if len(password) > MAX_LENGTH:
        return f"use at most {MAX_LENGTH} characters"
    if "\x00" in password:
        return "must not contain the NUL character"
    if password.lower() in common_passwords():
        return "this is one of the most common passwords; choose another"
    if any(word and word.lower() in password.lower() for word in avoid if len(word) >= 3):
        return "must not contain the user name"
    result = zxcvbn.zxcvbn(password[:_SCORED], user_inputs=[w for w in avoid if w])
    if int(result["score"]) < min_score:
        warning = str(result.get("feedback", {}).get("warning") or "").rstrip(".")
        reason = f" ({warning.lower()})" if warning else ""
        return f"too easy to guess{reason}; use a longer phrase of unrelated words"
    return None
