"""A run's window and artifact layout, computed the same way from a task's context or a template."""
from __future__ import annotations

from jinja2 import pass_context

from taxi_pipeline.layout import RunLayout
from taxi_pipeline.settings import get_settings
from taxi_pipeline.window import Window


def run_window(context) -> Window:
    """The training window: the `window_days` (a Param) before the run's data_interval_end."""
    end = context["data_interval_end"]
    if end is None:
        raise ValueError("this run has no data interval: trigger it with a logical date")
    return Window.ending_at(end, context["params"]["window_days"])


def run_layout(context) -> RunLayout:
    return RunLayout(get_settings().artifact_root, context["dag"].dag_id, run_window(context), context["run_id"])


@pass_context
def taxi_run(template_context) -> RunLayout:
    """Template macro: `{{ taxi_run().split_glob('train') }}` renders the same paths as run_layout()."""
    return run_layout(template_context)
