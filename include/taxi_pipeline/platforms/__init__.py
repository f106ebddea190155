"""The one place where the platforms differ: each builds the same stages from its own operators.

`local` (the default) runs on this machine: DuckDB for BigQuery, a local folder for GCS, Beam's
direct runner (its FnApiRunner engine) for Dataflow, local processes for the TFJob and the pods.
`gcp` uses the providers' operators (taxi_pipeline.platforms.gcp). DAG files call `get_platform()`
and the stage builders; the DAG's shape does not depend on it.

Stages both platforms build alike (the Python tasks, which read and write through the one file API,
taxi_pipeline.files) are built here, in `Platform`; the runtime steps' command lines too, so a
local process and a pod run the same arguments.
"""

from __future__ import annotations

from taxi_pipeline.branches import Branch, run_path
from taxi_pipeline.platforms import docs
from taxi_pipeline.pools import DEPLOY_POOL
from taxi_pipeline.settings import get_settings


# The command lines of the runtime modules: the same on both platforms (local processes or pods).
def train_arguments(branch: Branch) -> list[str]:
    return [
        "--transform_output",
        branch.path("transform_dir"),
        "--serving_model_dir",
        branch.path("model_dir"),
        "--log_dir",
        branch.path("logs_dir"),
        "--train_steps",
        "{{ params.train_steps }}",
        "--eval_steps",
        "{{ params.eval_steps }}",
        "--warmup_examples",
        branch.eval_glob,
    ]  # the raw rows of TF-Serving's warmup requests


def transform_options(branch: Branch) -> dict[str, str]:
    return {
        "train": branch.split_glob("train"),
        "eval": branch.split_glob("eval"),
        "variant": branch.variant,
        "output": branch.path("transform_dir"),
    }


def check_export_arguments(branch: Branch) -> list[str]:
    return [
        "--model",
        branch.path("model_dir"),
        "--eval",
        branch.eval_glob,
        "--output",
        branch.path("export_check_dir"),
        "--variant",
        branch.name,
    ]


def compare_windows_arguments(recent: Branch, long: Branch) -> list[str]:
    from taxi_pipeline.serving_root import CHAMPION_MODEL, STABLE_LABEL

    return [
        "--recent_model",
        recent.path("model_dir"),
        "--long_model",
        long.path("model_dir"),
        "--eval",
        recent.eval_glob,
        "--recent_evaluation",
        recent.path("evaluation_dir"),
        "--long_evaluation",
        long.path("evaluation_dir"),
        "--output",
        run_path("window_comparison_dir"),
        "--stable_model",  # the champion served when the comparison runs: the candidate must beat it
        f"{{{{ taxi_served_path('{CHAMPION_MODEL}', '{STABLE_LABEL}') }}}}",
    ]


def score_options() -> dict[str, str]:
    """The batch scoring's options: the day's trips, the served model found before it, the run's day."""
    served = "ti.xcom_pull(task_ids='find_served_model')"
    return {
        "trips": run_path("window_glob('day')"),
        "model": "{{ " + served + "['path'] }}",
        "model_version": "{{ " + served + "['version'] }}",
        "day": "{{ taxi_run().window.start.date().isoformat() }}",
        "scored_at": "{{ ti.start_date.isoformat() }}",
        "output": run_path("scores_dir"),
    }


def evaluate_arguments(branch: Branch, serving_root: str) -> list[str]:
    """The evaluation's arguments: the baseline is the model in service, looked up when it runs."""
    from taxi_pipeline.serving_root import ServingRoot

    base_path = ServingRoot(serving_root).base_path(branch.served_model) if branch.served_model else ""
    return [
        "--model",
        branch.path("model_dir"),
        "--serving_base_path",
        base_path,
        "--baseline_before",
        "{{ taxi_version() }}",
        "--eval",
        branch.eval_glob,
        "--output",
        branch.path("evaluation_dir"),
        "--variant",
        branch.name,
    ]


def _python(task_id: str, callable_name: str, doc_md: str, **kwargs):
    from airflow.providers.standard.operators.python import PythonOperator

    from taxi_pipeline import callables

    return PythonOperator(task_id=task_id, python_callable=getattr(callables, callable_name), doc_md=doc_md, **kwargs)


class Platform:
    """The stages both platforms build alike; a platform adds the others (see local.py, gcp.py)."""

    name: str

    def validate_window(self):
        return _python("validate_window", "validate_window_artifacts", docs.VALIDATE_DOC)

    def compare_variants(self):
        return _python("compare_variants", "compare_variants", docs.COMPARE_DOC, trigger_rule="none_failed")

    def decide_approval(self):
        from airflow.providers.standard.operators.python import BranchPythonOperator

        from taxi_pipeline import callables

        return BranchPythonOperator(
            task_id="decide_approval", python_callable=callables.decide_approval, doc_md=docs.DECIDE_APPROVAL_DOC
        )

    def approve_champion(self):
        from datetime import timedelta

        from taxi_pipeline.operators.approval import PromotionApprovalOperator

        return PromotionApprovalOperator(
            task_id="approve_champion",
            subject="Promote {{ dag.dag_id }}'s champion of {{ taxi_run().window }} to taxi:stable?",
            body="{{ ti.xcom_pull(task_ids='decide_approval', key='question') }}",
            decision_path=run_path("run_dir") + "/approval.json",
            response_timeout=timedelta(hours=24),
            doc_md=docs.APPROVE_DOC,
        )

    def record_verdict(self):
        return _python("record_verdict", "record_window_verdict", docs.RECORD_VERDICT_DOC)

    def find_served_model(self):
        return _python("find_served_model", "find_served_model", docs.FIND_SERVED_DOC)

    def monitor_serving(self):
        return _python("monitor_serving", "monitor_serving", docs.MONITOR_DOC)

    def request_retraining(self):
        from taxi_pipeline.assets import retrain_request

        return _python(
            "request_retraining", "request_retraining", docs.REQUEST_RETRAINING_DOC, outlets=[retrain_request()]
        )

    def roll_back(self):
        """The rollback DAG's one task (on gcp it moves the Vertex AI endpoint's traffic too)."""
        return _python("roll_back", "roll_back", docs.ROLLBACK_DOC, pool=DEPLOY_POOL)


def get_platform() -> Platform:
    platform = get_settings().platform
    if platform == "gcp":
        from taxi_pipeline.platforms.gcp import GcpPlatform

        return GcpPlatform()
    from taxi_pipeline.platforms.local import LocalPlatform

    return LocalPlatform()
