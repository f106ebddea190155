"""A run's windows and artifact layout, computed the same way from a task's context or a template.

The windows of a run follow from its Params:
- `window_days` (taxi_daily_retrain): the run trains on the `window_days` before its data interval
  end; the previous window of the same length is extracted too, as the drift reference.
- `recent_days` and `history_start` (taxi_sliding_window): the run judges on its own data interval
  (`newest`); it trains one model on the `recent_days` before it (`recent`) and one on everything
  from `history_start` to it (`long`). The newest data's drift is measured against `recent`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from jinja2 import pass_context

from taxi_pipeline.layout import RunLayout
from taxi_pipeline.serving import version_for
from taxi_pipeline.settings import get_settings
from taxi_pipeline.window import Window


@dataclass(frozen=True)
class WindowPlan:
    windows: dict[str, Window]  # every window the run extracts, by name ("" = the run's own window)
    checks: dict[str, str | None]  # the windows validation checks -> the window their drift is measured against
    key: str  # the window that names the run's artifact folder


def window_plan(context) -> WindowPlan:
    params, end = context["params"], context["data_interval_end"]
    if end is None:
        raise ValueError("this run has no data interval: trigger it with a logical date")
    if "recent_days" in params:
        newest = Window(context["data_interval_start"], end)
        recent = Window.ending_at(newest.start, params["recent_days"])
        history_start = datetime.fromisoformat(str(params["history_start"])).replace(tzinfo=timezone.utc)
        long = Window(history_start, newest.start)
        return WindowPlan({"newest": newest, "recent": recent, "long": long},
                          {"newest": "recent", "recent": None, "long": None}, key="newest")
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
    return version_for(template_context["data_interval_end"])
