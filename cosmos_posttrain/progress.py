"""Progress of long stages: a tqdm bar in a terminal, plain log lines anywhere else.

A bar redrawn with carriage returns turns a log file into one unreadable line, and Snakemake
jobs, torchrun workers and cluster jobs all write to files. So when stderr is not a terminal
the same calls log one line when the stage starts, one every `COSMOS_PROGRESS_INTERVAL`
seconds (30 by default) and one when it ends, each with the count, the rate and the time left.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.std import tqdm

log = logging.getLogger("cosmos_posttrain.progress")

DEFAULT_INTERVAL = 30.0
TERMINAL_INTERVAL = 1.0


def log_interval() -> float:
    """Seconds between two plain progress lines; the environment can shorten it."""
    return float(os.environ.get("COSMOS_PROGRESS_INTERVAL", DEFAULT_INTERVAL))


def is_terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


class _Discard:
    """A file that drops tqdm's own writes: LogProgress reports through logging only."""

    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LogProgress(tqdm):
    """A tqdm whose every display is one log line instead of a redrawn bar."""

    monitor_interval = 0  # no monitor thread: lines come from update() and close()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)  # huggingface_hub's bars may pass one
        kwargs.update(file=_Discard(), disable=False, leave=True, dynamic_ncols=False)
        kwargs.setdefault("mininterval", log_interval())
        kwargs.setdefault("miniters", 1)
        kwargs.setdefault("smoothing", 0)  # the average rate since the start
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "" or getattr(self, "_logged_n", None) == self.n:
            return True  # tqdm clearing a bar, or closing right after a line: nothing new
        self._logged_n = self.n
        log.info("%s", self.plain_line())
        return True

    def plain_line(self) -> str:
        d = self.format_dict
        unit = d["unit"]

        def amount(value: float) -> str:
            if d["unit_scale"] and value:
                return tqdm.format_sizeof(value, unit)
            return f"{value:g}{unit if d['unit_scale'] else ''}"

        rate = d["rate"] or (d["n"] / d["elapsed"] if d["elapsed"] else None)
        rate_text = f"{amount(rate)}/s" if d["unit_scale"] and rate else "?"
        if rate and not d["unit_scale"]:
            rate_text = f"{rate:.2f} {unit}/s"
        elapsed = tqdm.format_interval(d["elapsed"])
        desc = f"{d['prefix']}: " if d["prefix"] else ""
        suffix = "" if d["unit_scale"] else f" {unit}"
        if not d["total"]:
            return f"{desc}{amount(d['n'])}{suffix}, {rate_text}, {elapsed} elapsed"
        left = (d["total"] - d["n"]) / rate if rate else None
        left_text = tqdm.format_interval(left) if left is not None else "?"
        percent = 100 * d["n"] / d["total"]
        return (
            f"{desc}{amount(d['n'])}/{amount(d['total'])}{suffix} ({percent:.0f}%), "
            f"{rate_text}, {elapsed} elapsed, {left_text} left"
        )


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: float | None = None,
    unit: str = "it",
    unit_scale: bool = False,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar in a terminal, LogProgress otherwise; use it like tqdm."""
    cls = tqdm if is_terminal() else LogProgress
    if cls is tqdm:
        kwargs.setdefault("mininterval", TERMINAL_INTERVAL)
    return cls(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, **kwargs)


def download_bar_class() -> type[tqdm] | None:
    """For huggingface_hub's `tqdm_class`: its own byte bar in a terminal, log lines elsewhere."""
    return None if is_terminal() else LogProgress


def terminal_bar(*, total: int, desc: str, unit: str = "it", initial: int = 0) -> tqdm | None:
    """A bar for loops that already log their own lines (training): only in a terminal."""
    if not is_terminal():
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, mininterval=TERMINAL_INTERVAL)
