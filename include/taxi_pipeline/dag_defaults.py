"""What the project's DAGs share: task defaults (owner, retries with backoff), the Params of
training and validation, and the macros their templates use."""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param

from taxi_pipeline.run_context import taxi_run

DEFAULT_ARGS = {
    "owner": "taxi-mlops",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
}
MACROS = {"taxi_run": taxi_run}


def common_params(min_window_rows: int) -> dict[str, Param]:
    return {
        "min_window_rows": Param(min_window_rows, type="integer", minimum=1,
                                 description="Fewest trips each window may have to pass validation."),
        "train_steps": Param(300, type="integer", minimum=1, description="Training steps per model."),
        "eval_steps": Param(50, type="integer", minimum=1, description="Evaluation steps during training."),
    }


def on_call_doc(dag_id: str, where: str) -> str:
    return f"""
**On-call**: each task's doc says what its failure means. Artifacts of a run live under
`$TAXI_HOME/artifacts/{dag_id}/window=<window>/run=<run_id>/`{where}.
"""
