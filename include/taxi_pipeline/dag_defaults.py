"""What the project's DAGs share: task defaults (owner, retries with backoff, the failure alert),
the deadline alert of a run that takes far too long, the Params of training and validation, and
the macros their templates use."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DeadlineAlert, DeadlineReference, Param, SyncCallback

from taxi_pipeline.notifiers import TaxiAlertNotifier
from taxi_pipeline.run_context import taxi_run, taxi_version

DEFAULT_ARGS = {
    "owner": "taxi-mlops",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    # Every failed try notifies on-call (the `taxi_alerts` connection; one log line when there is none).
    "on_failure_callback": TaxiAlertNotifier(),
    # Between runs side by side (a backfill), a free slot goes to the task furthest down its DAG:
    # older windows finish and deploy before newer ones start their heavy steps.
    "weight_rule": "upstream",
}


def taxi_served_path(model: str, label: str) -> str:
    """Template macro: the folder of the version of `model` served at `label`, or "" if none is."""
    from taxi_pipeline import files
    from taxi_pipeline.serving_root import ServingRoot
    from taxi_pipeline.settings import get_settings

    root = ServingRoot(get_settings().serving_root)
    version = root.labels(model).get(label)
    return "" if version is None else files.join(root.base_path(model), str(version))


MACROS = {"taxi_run": taxi_run, "taxi_version": taxi_version, "taxi_served_path": taxi_served_path}


def run_deadline(dag_id: str, hours: float) -> DeadlineAlert:
    """Airflow 3's replacement of SLAs: alert when a run is still not done `hours` after it was
    queued (far beyond its normal duration, including the sensor's wait), through the same notifier."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(hours=hours),
        name=f"{dag_id}_too_long",
        callback=SyncCallback(
            TaxiAlertNotifier,
            kwargs={
                "message": f"DEADLINE MISSED: a {dag_id} run is still not done {hours:g} hours after it was queued; "
                "look for a task stuck in running or up_for_retry, or a sensor still waiting for data"
            },
        ),
    )


def run_in_process(dag, **kwargs):
    """`dag.test(**kwargs)` of a project DAG, without its deadline alerts. dag.test() has no scheduler,
    so no deadline is ever evaluated there, and Airflow 3.3's dag.test() fails at the end of a
    successful run of a DAG that has them (it looks their serialized form up as database ids)."""
    saved = dag.deadline
    dag.deadline = None
    try:
        return dag.test(**kwargs)
    finally:
        dag.deadline = saved


def window_end_param() -> Param:
    """Manual runs: the day the run's windows end, in place of its data interval end."""
    return Param(
        None,
        type=["null", "string"],
        format="date",
        title="Window end",
        description="Manual runs: the day the run's windows end (midnight UTC, e.g. 2016-01-01), "
        "in place of its data interval end. It names the artifacts and the served "
        "version as that window's scheduled run would. Leave empty for the data "
        "interval end.",
    )


def common_params(min_window_rows: int) -> dict[str, Param]:
    """Params of both DAGs. Airflow validates them against their schema when a run is triggered
    (the UI's form and the REST API refuse a bad value), before any task runs."""
    return {
        "window_end": window_end_param(),
        "min_window_rows": Param(
            min_window_rows,
            title="Min window rows",
            type="integer",
            minimum=1,
            description="Fewest trips each window may have to pass validation.",
        ),
        "accept_data_changes": Param(
            "",
            type="string",
            title="Accept data changes",
            description="Manual runs: why the window's data legitimately changed (e.g. 'a new "
            "payment type, Mobile, since March'). If the window then fails "
            "validation only on schema anomalies, the run writes the next schema "
            "version that takes those changes, and goes on. Empty: nothing is "
            "accepted.",
        ),
        "train_steps": Param(
            300, title="Train steps", type="integer", minimum=1, description="Training steps per model."
        ),
        "eval_steps": Param(
            50, title="Eval steps", type="integer", minimum=1, description="Evaluation steps during training."
        ),
        "workers": Param(
            2,
            title="Workers",
            type="integer",
            minimum=1,
            maximum=16,
            description="Worker replicas of the TFJob that trains each model (gcp platform; "
            "the local platform trains in one process).",
        ),
    }


def require_approval_param(default: str) -> Param:
    from taxi_pipeline.deployment import APPROVAL_MODES

    return Param(
        default,
        type="string",
        enum=list(APPROVAL_MODES),
        title="Require approval",
        description="Whether a person approves the promotion before promote_champion: never (no one is "
        "asked), always, or when_close (the champion's AUC gain over the model in service is below "
        "taxi_pipeline.deployment.APPROVAL_MARGIN).",
    )


def on_call_doc(dag_id: str, where: str) -> str:
    return f"""
**On-call**: each task's doc says what its failure means. Artifacts of a run live under
`$TAXI_HOME/artifacts/{dag_id}/window=<window>/run=<run_id>/`{where}.
"""


def served_label_param() -> Param:
    return Param(
        "stable",
        title="Served label",
        type="string",
        pattern="^[a-z][a-z0-9_-]*$",
        description="The label of the champion model `taxi` whose version the run uses (its version "
        "labelled so in the serving root when the run starts).",
    )
