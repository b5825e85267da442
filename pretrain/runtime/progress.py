"""Progress that is never silent: a tqdm bar on a terminal, and elsewhere (a log file, a pipe, CI) one plain line
every `every` seconds with step/total, rate and ETA, so a long stage can always be told from a hung one."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

PLAIN_EVERY_S = 15.0  # a plain line at least this often without a terminal (issue: never silent for ~20 s)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """`update(n)` after each unit of work; `postfix(...)` for the current loss or rate; `close()` at the end."""

    def __init__(self, total: int, initial: int = 0, label: str = "", unit: str = "step", every: float = PLAIN_EVERY_S):
        self.total, self.done, self.label, self.unit, self.every = total, initial, label, unit, every
        self.terminal = sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, desc=label or None, dynamic_ncols=True, unit=unit) if (
            self.terminal
        ) else None  # fmt: skip
        self.start, self.start_done = time.monotonic(), initial
        self.last, self.last_done = self.start, initial
        self.extra = ""

    def postfix(self, **values: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**values)
        self.extra = ", ".join(f"{k} {v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self._print(now)

    def _print(self, now: float) -> None:
        self.last, self.last_done = now, self.done
        print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float) -> str:
        """`[label] 120/600 steps (3.4 steps/s, ETA 2m21s), loss 1.23`"""
        rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
        eta = f", ETA {_clock((self.total - self.done) / rate)}" if rate > 0 else ""
        extra = f", {self.extra}" if self.extra else ""
        head = f"[{self.label}] " if self.label else ""
        return f"{head}{self.done}/{self.total} {self.unit}s ({rate:.2f} {self.unit}s/s{eta}){extra}"

    def close(self) -> None:
        """End the bar; without a terminal, a last line when the work is complete and came after the last line (a
        stage shorter than `every` still says what it did; a stopped one leaves its one error line alone)."""
        if self.bar is not None:
            self.bar.close()
        elif self.last_done < self.done >= self.total:
            self._print(time.monotonic())
