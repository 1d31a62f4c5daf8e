"""``--seeds``: a range ``0-4``, a list ``0,3,7``, or a count ``5`` (seeds 0 to 4)."""

from __future__ import annotations

import re

from mnist_lit.errors import UserError


def parse_seeds(text: str) -> list[int]:
    """The seeds ``text`` names, in order, without repeats; a :class:`UserError` for anything else."""
    text = text.strip()
    hint = "give a range (0-4), a list (0,3,7) or a count (5 means seeds 0 to 4)"
    if re.fullmatch(r"\d+", text):
        count = int(text)
        if count < 1:
            raise UserError(f"--seeds {text}: a count must be at least 1; {hint}.")
        return list(range(count))
    match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
    if match:
        first, last = int(match[1]), int(match[2])
        if last < first:
            raise UserError(f"--seeds {text}: the range ends before it starts; {hint}.")
        return list(range(first, last + 1))
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1 and all(re.fullmatch(r"\d+", p) for p in parts):
        seeds = [int(p) for p in parts]
        if len(set(seeds)) != len(seeds):
            raise UserError(f"--seeds {text}: a seed is named twice.")
        return seeds
    raise UserError(f"--seeds {text}: not understood; {hint}.")
