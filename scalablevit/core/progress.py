"""Progress of the long steps (calibration, validation, evaluation, benchmarks) that people can read in any log.

On a terminal, one tqdm line on stderr that updates in place. Anywhere else (a file, a pipe, CI), a log line every
10 % of the work (at most one per 5 s) or every 30 s, with the count, the rate and the time left, and a last line
with the total time; a job done within 5 s logs nothing (its step logs its time). Never a blank line. tqdm is optional (a device may lack it): without it a terminal gets the log lines too.
"""
import logging
import sys
import time
from typing import Callable, Iterator, Sequence, TypeVar

logger = logging.getLogger(__name__)

MIN_ITEMS = 64         # fewer items finish too fast to be worth a progress report
EVERY_FRACTION = 0.1   # a log line per tenth of the work ...
EVERY_SECONDS = 30.0   # ... or per half minute, whichever comes first,
MIN_SECONDS = 5.0      # but never two lines within 5 s

Advance = Callable[[int], None]
T = TypeVar('T')


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f'{minutes}:{seconds:02d}'


class LogProgress:
    """``advance(n)`` that logs ``desc: done/total unit (pct), rate, ETA`` at each tenth or half minute."""

    def __init__(self, total: int, desc: str, unit: str = 'img', clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.clock = total, desc, unit, clock
        self.done, self.start = 0, clock()
        self.last_time, self.next_count, self.lines = self.start, total * EVERY_FRACTION, 0

    def __call__(self, n: int) -> None:
        self.done += n
        now = self.clock()
        since = now - self.last_time
        if self.done >= self.total:
            if not self.lines:
                return
        elif not (since >= EVERY_SECONDS or (self.done >= self.next_count and since >= MIN_SECONDS)):
            return
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if self.done >= self.total:
            logger.info('%s: %d/%d %s in %s (%.1f %s/s)', self.desc, self.done, self.total, self.unit,
                        _clock(elapsed), rate, self.unit)
        else:
            logger.info('%s: %d/%d %s (%d %%), %.1f %s/s, ETA %s', self.desc, self.done, self.total, self.unit,
                        100 * self.done // self.total, rate, self.unit, _clock((self.total - self.done) / rate))
        self.last_time, self.lines = now, self.lines + 1
        while self.next_count <= self.done:
            self.next_count += self.total * EVERY_FRACTION


def progress(total: int, desc: str, unit: str = 'img') -> Advance:
    """``advance(n)`` callback for ``total`` items (e.g. for ``run_batches``); a no-op below ``MIN_ITEMS``."""
    if total < MIN_ITEMS:
        return lambda n: None
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

            def advance(n: int) -> None:
                bar.update(n)
                if bar.n >= total:
                    bar.close()
            return advance
    return LogProgress(total, desc, unit)


def iterate(items: Sequence[T], desc: str, unit: str = 'img') -> Iterator[T]:
    """``items`` one by one, reporting progress as each is taken."""
    advance = progress(len(items), desc, unit)
    for item in items:
        yield item
        advance(1)

