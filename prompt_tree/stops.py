"""Stop strings (placeholder, filled below)."""
from __future__ import annotations

from typing import Sequence


def cut_at_stop(text: str, stops: Sequence[str], include: bool) -> str:
    """The text up to the earliest stop string (through it when include); unchanged when none occurs.

    Earliest start wins; at one start the longest stop string (so include keeps the whole of it)."""
    best = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0] or (i == best[0] and len(s) > len(best[1]))):
            best = (i, s)
    if best is None:
        return text
    return text[: best[0] + (len(best[1]) if include else 0)]
