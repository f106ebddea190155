"""Operator extra links of taxi-mlops: from a task to the artifacts it wrote and the model it served.

Each link computes its URL when the task finishes (Airflow 3 stores it in an XCom the UI reads):
the path comes from the run's layout (taxi_pipeline.layout), the URL from the platform
(`get_platform().links`: the local artifacts app, or the GCS console on gcp).
`add_artifact_links(dag)` gives every task of the project's DAGs its links, by the stage it runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from airflow.sdk import BaseOperatorLink


def _context(ti_key):
    """The task's template context (a finished task instance in the worker)."""
    return ti_key.get_template_context()


class ArtifactLink(BaseOperatorLink):
    """A link to an artifact of the run: `locate(layout)` returns its path in the run's layout."""

    def __init__(self, name: str, locate: Callable | None = None):
        self._name = name
        self.locate = locate

    @property
    def name(self) -> str:
        return self._name

    @property
    def xcom_key(self) -> str:
        return "_link_taxi_" + re.sub(r"[^a-z0-9]+", "_", self._name.lower()).strip("_")

    def get_link(self, operator, *, ti_key) -> str:
        from taxi_pipeline.platforms import get_platform
        from taxi_pipeline.run_context import run_layout

        return get_platform().links.artifact(self.locate(run_layout(_context(ti_key))))


class ServedModelLink(ArtifactLink):
    """A link to the status of a served model (versions, labels, deployment records)."""

    def __init__(self, model: str | None = None, name: str = "Served model"):
        super().__init__(name)
        self.model = model

    def get_link(self, operator, *, ti_key) -> str:
        from taxi_pipeline.platforms import get_platform

        model = self.model or _context(ti_key)["params"]["model"]
        return get_platform().links.served_model(model)


class HistoryLink(ArtifactLink):
    def __init__(self):
        super().__init__("Verdict history", lambda layout: f"{layout.history_dir}/history.html")


def links_for(task_id: str) -> list[BaseOperatorLink]:
    """The links of a task of the project's DAGs, by its stage (the last part of its id)."""
    from taxi_pipeline.serving_root import CHAMPION_MODEL, model_name

    group, _, stage = task_id.rpartition(".")
    data_report = ArtifactLink("Data report", lambda layout: layout.report_path("data"))
    model_report = ArtifactLink("Model report", lambda layout: layout.report_path("model"))
    return {
        "extract_window": [ArtifactLink("Extracted data", lambda layout: layout.data_dir)],
        "validate_window": [ArtifactLink("Validation report", lambda layout: layout.validation_dir()), data_report],
        "data_report": [data_report],
        "transform": [ArtifactLink("Transform output", lambda layout: layout.transform_dir(group))],
        "train": [
            ArtifactLink("Training logs", lambda layout: layout.logs_dir(group)),
            ArtifactLink("Model", lambda layout: layout.model_dir(group)),
        ],
        "evaluate": [ArtifactLink("TFMA output", lambda layout: layout.evaluation_dir(group)), model_report],
        "push": [ServedModelLink(model_name(group))],
        "compare_variants": [
            ArtifactLink("Variant comparison", lambda layout: f"{layout.run_dir}/comparison.txt"),
            model_report,
        ],
        "promote_champion": [ServedModelLink(CHAMPION_MODEL)],
        "compare_windows": [
            ArtifactLink("Window comparison", lambda layout: f"{layout.window_comparison_dir}/comparison.txt"),
            model_report,
        ],
        "record_verdict": [HistoryLink(), model_report],
        "model_report": [model_report],
        "score_trips": [ArtifactLink("Scores", lambda layout: layout.scores_dir)],
        "monitor_serving": [ArtifactLink("Monitor report", lambda layout: layout.report_path("monitor"))],
    }.get(stage, [])


def add_artifact_links(dag) -> None:
    """Give each task of `dag` the links of its stage (tasks of other stages keep theirs)."""
    for task in dag.tasks:
        links = links_for(task.task_id)
        if task.task_id.endswith("model_report") and dag.dag_id == "taxi_sliding_window":
            links = [*links, HistoryLink()]
        if links:
            task.operator_extra_links = [*task.operator_extra_links, *links]
