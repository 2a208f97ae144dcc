"""A one-line progress bar on stderr, drawn only on a terminal.

Piped or redirected, it draws nothing at all, so logs and pipelines never
see carriage returns. Redraws are rate-limited (10 per second) so a tight
loop calling :meth:`Progress.advance` per record stays cheap.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

_REDRAW_S = 0.1


class Progress:
    """``with Progress("produce", total=size, unit="B") as bar: bar.advance(n)``.

    ``total=None`` shows a count and a rate instead of a bar.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "records",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= _REDRAW_S:
            self._last_draw = now
            self._draw(now)

    def close(self) -> None:
        """Erase the bar, leaving the terminal line clean for what follows."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = _short(self.done / elapsed)
        width = shutil.get_terminal_size((80, 24)).columns
        if self.total:
            frac = min(self.done / self.total, 1.0)
            tail = (
                f" {frac * 100:5.1f}% {_short(self.done)}/{_short(self.total)} {self.unit} {rate}/s"
            )
            room = max(width - len(self.label) - len(tail) - 4, 10)
            filled = int(room * frac)
            line = f"{self.label} [{'#' * filled}{'.' * (room - filled)}]{tail}"
        else:
            line = f"{self.label} {_short(self.done)} {self.unit} {rate}/s"
        self.stream.write("\r" + line[: width - 1] + "\x1b[K")
        self.stream.flush()
        self._drawn = True


def _short(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.1f}{unit}"
    return str(int(x))
