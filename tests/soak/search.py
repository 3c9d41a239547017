"""`--find-max`'s search over fleet sizes. Doubling finds the bracket quickly (a few short runs,
each several minutes); halving the bracket then says how large a fleet passes to within
`precision`, instead of leaving an answer off by up to a factor of two."""

from __future__ import annotations

from dataclasses import dataclass

ROUND_TO = 10_000  # sensors: sizes a person reads at a glance


@dataclass
class Search:
    """Fleet sizes to try, from `first` up to `ceiling` (tried itself when doubling passes it),
    told after each whether it passed."""

    first: int
    ceiling: int
    precision: float = 0.25  # stop once the bracket is narrower than this share of `best`
    best: int | None = None  # the largest size that passed
    failed: int | None = None  # the smallest size that failed

    def next(self) -> int | None:
        """The next size to try; None when the search is over."""
        if self.failed is None:
            if self.best is None:
                return self.first if self.first <= self.ceiling else None
            return None if self.best >= self.ceiling else min(self.best * 2, self.ceiling)
        if self.best is None or self.failed - self.best <= self.precision * self.best:
            return None
        middle = (self.best + self.failed) // 2
        rounded = middle - middle % ROUND_TO
        return rounded if rounded > self.best else None

    def record(self, size: int, passed: bool) -> None:
        if passed:
            self.best = max(size, self.best or 0)
        else:
            self.failed = size if self.failed is None else min(size, self.failed)
