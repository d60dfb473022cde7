"""One progress bar per operator on stderr: rows done (of the total when known), rows/s and live
actors. Off when stderr is not a TTY or when ``DataContext.enable_progress_bars`` is False; only
the last operator's (the dataset's output) with ``execution_options.verbose_progress=False``.
Uses tqdm when it is installed, else writes plain lines itself."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO


class _Line:
    def __init__(self, name: str, total: int | None) -> None:
        self.name, self.total, self.rows, self.actors = name, total, 0, 0


class ProgressBars:
    def __init__(
        self, names: Sequence[str], totals: Sequence[int | None], *, enabled: bool,
        stream: TextIO | None = None, only_last: bool = False,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self._stream.isatty()
        self._lines = [_Line(n, t) for n, t in zip(names, totals, strict=True)]
        # Operators without a bar of their own: their updates are dropped.
        self._hidden = set(range(len(self._lines) - 1)) if only_last else set()
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = 0
        self._tqdm: list[Any] | None = None
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._tqdm = [
            tqdm(total=line.total, desc=line.name, position=i, unit=" rows", leave=True,
                 file=self._stream, dynamic_ncols=True)
            for i, line in enumerate(self._lines[len(self._hidden):])
        ]

    def update(self, index: int, rows: int = 0, actors: int | None = None) -> None:
        if not self.enabled or index in self._hidden:
            return
        line = self._lines[index]
        line.rows += rows
        if actors is not None:
            line.actors = actors
        if self._tqdm is not None:
            bar = self._tqdm[index - len(self._hidden)]
            if actors:
                bar.set_postfix_str(f"{actors} actors", refresh=False)
            bar.update(rows)
            return
        now = time.monotonic()
        if now - self._last_draw >= 0.5:
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        out = self._stream
        if self._drawn:
            out.write(f"\x1b[{self._drawn}A")
        shown = [line for i, line in enumerate(self._lines) if i not in self._hidden]
        for line in shown:
            total = f"/{line.total}" if line.total is not None else ""
            actors = f", {line.actors} actors" if line.actors else ""
            out.write(f"\x1b[2K{line.name}: {line.rows}{total} rows, "
                      f"{line.rows / elapsed:,.0f} rows/s{actors}\n")
        out.flush()
        self._drawn = len(shown)
        self._last_draw = now

    def close(self) -> None:
        if not self.enabled:
            return
        if self._tqdm is not None:
            for bar in self._tqdm:
                bar.close()
            return
        self._draw(time.monotonic())
