"""A run's windows and artifact layout, computed the same way from a task's context or a template.

The windows of a run follow from its Params, all ending at the run's end: its data interval end,
or the `window_end` Param of a manual run (a date; its midnight UTC), which replaces it everywhere
(windows, artifact folder, served version), so a manual run of a past window is that window's run.
- `window_days` (taxi_daily_retrain): the run trains on the `window_days` before its end; the
  previous window of the same length is extracted too, as the drift reference.
- `recent_days` and `history_start` (taxi_sliding_window): the run judges on its own interval
  (`newest`: its data interval, or the calendar month before `window_end`); it trains one model on
  the `recent_days` before it (`recent`) and one on everything from `history_start` to it (`long`).
  The newest data's drift is measured against `recent`.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

from jinja2 import pass_context

from taxi_pipeline.layout import RunLayout
from taxi_pipeline.serving_root import version_for
from taxi_pipeline.settings import get_settings
from taxi_pipeline.window import Window


@dataclass(frozen=True)
class WindowPlan:
    windows: dict[str, Window]  # every window the run extracts, by name ("" = the run's own window)
    checks: dict[str, str | None]  # the windows validation checks -> the window their drift is measured against
    key: str  # the window that names the run's artifact folder


def _utc_day(value) -> datetime:
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def _month_before(end: datetime) -> datetime:
    year, month = (end.year, end.month - 1) if end.month > 1 else (end.year - 1, 12)
    return end.replace(year=year, month=month, day=min(end.day, calendar.monthrange(year, month)[1]))


def run_end(context) -> datetime:
    """Where the run's windows end: the `window_end` Param when a manual run sets it, else the data interval end."""
    window_end = context["params"].get("window_end")
    if window_end:
        return _utc_day(window_end)
    end = context["data_interval_end"]
    if end is None:
        raise ValueError("this run has no data interval: trigger it with a logical date or set the window_end Param")
    return end


def window_plan(context) -> WindowPlan:
    params, end = context["params"], run_end(context)
    if "recent_days" in params:
        start = _month_before(end) if params.get("window_end") else context["data_interval_start"]
        newest = Window(start, end)
        recent = Window.ending_at(newest.start, params["recent_days"])
        history_start = _utc_day(params["history_start"])
        if history_start >= newest.start:
            raise ValueError(
                f"history_start {params['history_start']} is not before the judged window {newest}: "
                "the long-window model would have no data"
            )
        long = Window(history_start, newest.start)
        return WindowPlan(
            {"newest": newest, "recent": recent, "long": long},
            {"newest": "recent", "recent": None, "long": None},
            key="newest",
        )
    window = Window.ending_at(end, params["window_days"])
    return WindowPlan({"": window, "reference": window.previous()}, {"": "reference"}, key="")


def run_window(context) -> Window:
    plan = window_plan(context)
    return plan.windows[plan.key]


def run_layout(context) -> RunLayout:
    return RunLayout(get_settings().artifact_root, context["dag"].dag_id, run_window(context), context["run_id"])


@pass_context
def taxi_run(template_context) -> RunLayout:
    """Template macro: `{{ taxi_run().split_glob('train') }}` renders the same paths as run_layout()."""
    return run_layout(template_context)


@pass_context
def taxi_version(template_context) -> int:
    """Template macro: the version a run's models are served as (serving.version_for)."""
    return version_for(run_end(template_context))
