"""The training window of a run: `[start, end)`, `days` long, ending at the run's data_interval_end."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


def _utc(moment: datetime) -> datetime:
    """A plain UTC datetime (Airflow hands out pendulum DateTimes, whose arithmetic differs)."""
    if moment.tzinfo is None:
        raise ValueError(f"window bounds must be timezone-aware, got naive {moment!r}")
    return datetime.fromtimestamp(moment.timestamp(), tz=UTC)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self):
        object.__setattr__(self, "start", _utc(self.start))
        object.__setattr__(self, "end", _utc(self.end))
        if self.end <= self.start:
            raise ValueError(f"empty window: start {self.start} is not before end {self.end}")

    @classmethod
    def ending_at(cls, end: datetime, days: int) -> Window:
        if int(days) < 1:
            raise ValueError(f"window_days must be at least 1, got {days}")
        return cls(end - timedelta(days=int(days)), end)

    @classmethod
    def parse(cls, text: str) -> Window:
        """The window `str(window)` wrote, e.g. in a deployment record: `[start, end)`."""
        start, _, end = text.strip().removeprefix("[").removesuffix(")").partition(", ")
        return cls(datetime.fromisoformat(start), datetime.fromisoformat(end))

    @property
    def days(self) -> float:
        return (self.end - self.start) / timedelta(days=1)

    def previous(self) -> Window:
        """The window of the same length just before this one: the reference for drift checks."""
        return Window(self.start - (self.end - self.start), self.start)

    @property
    def key(self) -> str:
        """Path-safe, sortable name of the window, e.g. `20150102T0000-20160102T0000`."""
        return f"{self.start:%Y%m%dT%H%M}-{self.end:%Y%m%dT%H%M}"

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"
