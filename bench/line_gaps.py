"""Time-stamp a command's output and report its longest silence: `superclass demo --out D 2>&1 | python
bench/line_gaps.py`. Each line gets the seconds since the first read; the last line gives the total and the longest
gap between lines (the demo promises no 20-s window without a line)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def stamp(lines: TextIO, out: TextIO) -> tuple[float, float]:
    """Copy `lines` to `out`, each prefixed with its arrival time; returns (total seconds, longest gap)."""
    start = last = time.monotonic()
    longest = 0.0
    for line in lines:
        now = time.monotonic()
        longest, last = max(longest, now - last), now
        out.write(f"{now - start:7.1f} {line}")
        out.flush()
    total = time.monotonic() - start
    out.write(f"total {total:.1f} s, longest gap {longest:.1f} s\n")
    return total, longest


if __name__ == "__main__":
    stamp(sys.stdin, sys.stdout)
