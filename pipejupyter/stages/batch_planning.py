"""How many items go into one Dask task.

A Dask task costs ~1-2 ms end to end however small it is, so 20,000 one-millisecond items
sent one per task spend more time in the scheduler than in the work. The planner measures
item duration at run time and packs items so that a task takes about ``target`` seconds:

- probe: until a measurement arrives, tasks hold one item each and at most one task per
  worker thread is in flight (an item could take an hour: never bet many on one task);
- then: size = target / mean item duration (a running average of what workers measured),
  at most an even share of what is left per thread (so the tail stays balanced), and
  twice the thread count of tasks in flight, so no thread waits for the notebook.

Retries, results, progress and persistence stay per item: a batch is only transport.
"""

from __future__ import annotations

import math

DEFAULT_TARGET = 0.15  # seconds per task: ~1% scheduler overhead, progress every 150 ms
MAX_BATCH = 10_000
SMOOTHING = 0.5  # recent batches count most: durations drift (caches, contention)


class BatchPlanner:
    def __init__(
        self, mode: str | int | bool = "auto", *, slots: int = 1, target: float = DEFAULT_TARGET
    ) -> None:
        if mode in (False, None, 0, 1, "off", "none"):
            mode = 1
        if mode != "auto" and not (
            isinstance(mode, int) and not isinstance(mode, bool) and mode >= 1
        ):
            raise ValueError(
                f"batch must be 'auto', an integer >= 1, or False (one item per task); got {mode!r}"
            )
        self.mode = mode
        self.slots = max(1, int(slots))
        self.target = float(target)
        self.item_seconds: float | None = None  # running mean of one item's duration
        self.observed = 0

    @property
    def probing(self) -> bool:
        return self.mode == "auto" and self.item_seconds is None

    def max_in_flight(self) -> int:
        if self.probing:
            return self.slots
        if self.mode == "auto":
            return 2 * self.slots
        # A fixed size: keep the scheduler's queue fuller, it has nothing to measure.
        return max(2 * self.slots, 1000 // self.mode)

    def next_size(self, remaining: int) -> int:
        if remaining <= 0:
            return 0
        if self.mode != "auto":
            return min(int(self.mode), remaining)
        if self.item_seconds is None:
            return 1
        wanted = self.target / max(self.item_seconds, 1e-7)
        fair_share = math.ceil(remaining / self.slots)
        return max(1, min(int(wanted), fair_share, MAX_BATCH, remaining))

    def observe(self, items: int, seconds: float) -> None:
        """A batch of ``items`` took ``seconds`` of worker time (sum of item durations)."""
        if items <= 0:
            return
        per_item = max(seconds, 0.0) / items
        if self.item_seconds is None:
            self.item_seconds = per_item
        else:
            self.item_seconds += SMOOTHING * (per_item - self.item_seconds)
        self.observed += items

    def set_slots(self, slots: int) -> None:
        self.slots = max(1, int(slots))
