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
- neither (taxi_batch_scoring, taxi_model_monitor): the run's one day, `day`, the day before its end.

A run started by an asset event (an out-of-schedule retraining the monitor asked for, a re-scoring
after a new champion) has no data interval: its end is the `window_end` in the event's extra.
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


def _event_window_end(context) -> str | None:
    """The newest `window_end` of the asset events that started the run (None: none started it)."""
    events = context.get("triggering_asset_events") or {}
    ends = [e.extra["window_end"] for batch in events.values() for e in batch if (e.extra or {}).get("window_end")]
    return max(ends) if ends else None


def run_end(context) -> datetime:
    """Where the run's windows end: the `window_end` Param when a manual run sets it, else the data
    interval end, else (a run started by an asset event) the event's `window_end`."""
    window_end = context["params"].get("window_end")
    if window_end:
        return _utc_day(window_end)
    end = context.get("data_interval_end")
    if end is not None:
        return end
    window_end = _event_window_end(context)
    if window_end:
        return _utc_day(window_end)
    raise ValueError(
        "this run has no data interval and no asset event naming a window_end: "
        "trigger it with a logical date or set the window_end Param"
    )


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
    if "window_days" not in params:  # the scoring and monitor DAGs: one day
        return WindowPlan({"day": Window.ending_at(end, 1)}, {}, key="day")
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
