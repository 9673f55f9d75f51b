"""Progress bars that read the same live and in a saved notebook: text, never widgets.

    from spot_utils.progress import progress
    for batch in progress(batches, desc="generate"):
        ...

In a terminal this is tqdm's usual bar, redrawn in place. Anywhere else (a notebook kernel, papermill,
nbval, a CI log) the bar is printed as a few whole lines: at the start, at each quarter of the way and
at the end. A committed notebook then shows plain text ("evaluate base: 100%|...| 5/5 [00:21<00:00]")
instead of a frozen "0%" widget, and a long cell sends a handful of output messages, not thousands.
"""
from __future__ import annotations

import sys

from tqdm.std import tqdm

QUARTERS = 4  # lines per bar, besides the first one


class LineBar(tqdm):
    """A tqdm bar that prints a new line at 0%, at each quarter of the way and at the end."""

    def __init__(self, *args, **kwargs):
        self._quarter_shown = -1
        self._n_shown = -1
        kwargs.setdefault("file", sys.stdout)
        super().__init__(*args, mininterval=0, miniters=1, **kwargs)  # no ncols: the whole line, never cut

    def _quarter(self) -> int:
        return QUARTERS * self.n // self.total if self.total else 0

    def display(self, msg=None, pos=None):
        if msg is not None:  # tqdm asks to erase the line: a printed line stays
            return True
        if self._quarter() > self._quarter_shown:
            self._print()
        return True

    def _print(self):
        self._quarter_shown, self._n_shown = self._quarter(), self.n
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()

    def close(self):
        if self.disable:
            return
        if self.n != self._n_shown:  # the final state (a loop that stopped early, or no total)
            self._print()
        self.disable = True
        self._decr_instances(self)


def progress(iterable=None, desc: str = "", total: int | None = None, disable: bool = False, **kwargs) -> tqdm:
    """tqdm's bar in a terminal, LineBar everywhere else (see the module docstring)."""
    if sys.stdout.isatty():
        return tqdm(iterable, desc=desc, total=total, disable=disable, mininterval=1.0, **kwargs)
    return LineBar(iterable, desc=desc, total=total, disable=disable, **kwargs)
