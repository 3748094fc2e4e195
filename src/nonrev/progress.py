"""A heartbeat for long loops: silent for short runs, one line on stderr about every
ten seconds once a run has gone on for ten seconds (foundation: no nonrev imports)."""

from __future__ import annotations

import sys
import time

#: A loop reports once it has run this long, then about this often.
AFTER_S = 10.0


class Heartbeat:
    """``beat = Heartbeat("sample", total)``, then ``beat.tick(i)`` after item ``i``
    (0-based) of ``total``: prints ``nonrev: <label>: i + 1 of total, <extra>, <s> s``
    to ``stream`` (stderr) when due. A tick costs one clock read."""

    def __init__(self, label: str, total: int, *, stream=None, after: float | None = None):
        self.label, self.total, self.stream = label, int(total), stream
        self.start = time.perf_counter()
        self.next = self.start + (AFTER_S if after is None else after)

    def tick(self, i: int, extra: str = "") -> None:
        now = time.perf_counter()
        if now < self.next:
            return
        self.next = now + AFTER_S
        more = f", {extra}" if extra else ""
        print(
            f"nonrev: {self.label}: {i + 1} of {self.total}{more}, {now - self.start:.0f} s",
            file=self.stream or sys.stderr,
            flush=True,
        )
