"""taxi_sliding_window: Workflow 2 of the Kubeflow taxi example, every month.

Does a model trained on recent data beat one trained on all history, judged on the newest data?

wait_for_window >> extract_window >> validate_window
    >> recent: transform >> train >> evaluate >> check_export >> push   (the `recent_days` before the month)
    >> long:   transform >> train >> evaluate >> check_export >> push   (from `history_start` to the month)
    >> compare_windows >> record_verdict
    >> decide_approval >> approve_champion (a person) >> promote_champion

Both models are judged by TFMA on every trip of the run's own month (its data interval, or the
calendar month before the `window_end` Param of a manual run), and each blessed one is pushed as the
run's version of a served model of its own (taxi_recent, taxi_long), as the Kubeflow workflow
deployed both. The run's candidate (the verdict's winner, else the higher AUC) is compared on the
same trips with the model served at taxi:stable; when it is significantly better (or nothing is
served), it is offered for promotion through the same approval gate as taxi_daily_retrain's, and
by default a person decides (`require_approval`): approved, it is served at taxi:stable with the
verdict in its deployment record; rejected or unanswered in 24 h, nothing changes. The same stages
as taxi_daily_retrain, built by the same platform (TAXI_PLATFORM); see
include/taxi_pipeline/platforms/ and branches.py.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TaskGroup, chain

from taxi_model.variants import VARIANTS
from taxi_pipeline.branches import Branch
from taxi_pipeline.dag_defaults import (
    DEFAULT_ARGS,
    MACROS,
    common_params,
    on_call_doc,
    require_approval_param,
    run_deadline,
)
from taxi_pipeline.platforms import get_platform
from taxi_pipeline.platforms.extra_links import add_artifact_links
from taxi_pipeline.reports.report_tasks import data_report_task, model_report_task
from taxi_pipeline.serving_root import model_name

platform = get_platform()
BRANCHES = tuple(  # both models use the preprocessing variant of the run's `variant` Param
    Branch(name=name, variant="{{ params.variant }}", window=name, eval_window="newest", deploy_as=model_name(name))
    for name in ("recent", "long")
)

with DAG(
    dag_id="taxi_sliding_window",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=datetime(2014, 1, 1),
    max_active_runs=2,
    tags=["taxi", "workflow-2", "recency", f"platform:{platform.name}"],
    doc_md=__doc__
    + on_call_doc(
        "taxi_sliding_window", ", the history of verdicts under `$TAXI_HOME/artifacts/taxi_sliding_window/history/`"
    ),
    default_args=DEFAULT_ARGS,
    # its work takes hours; then a person has up to 24 h to answer the approval
    deadline=run_deadline("taxi_sliding_window", hours=36),
    params={
        "recent_days": Param(
            90,
            title="Recent days",
            type="integer",
            minimum=7,
            maximum=3650,
            description="Days before the evaluated month that the recent model trains on.",
        ),
        "history_start": Param(
            "2013-01-01",
            title="History start",
            type="string",
            format="date",
            description="First day the long-window model trains on.",
        ),
        "variant": Param(
            "standard",
            type="string",
            enum=list(VARIANTS),
            title="Variant",
            description="The preprocessing variant both models use.",
        ),
        "require_approval": require_approval_param("always"),  # a person picks, as in the Kubeflow workflow
        **common_params(min_window_rows=50),
    },
    user_defined_macros=MACROS,
) as dag:
    wait_for_window = platform.wait_for_window()
    extract_window = platform.extract_window(dag.dag_id)
    validate_window = platform.validate_window()

    models = []
    for branch in BRANCHES:
        with TaskGroup(group_id=branch.name, tooltip=f"the model trained on the {branch.name} window") as group:
            chain(
                platform.transform(branch),
                platform.train(branch),
                platform.evaluate(branch),
                platform.check_export(branch),
                platform.push(branch),
            )
        models.append(group)

    compare_windows = platform.compare_windows(*BRANCHES)
    record_verdict = platform.record_verdict()
    decide_approval = platform.decide_approval()
    approve_champion = platform.approve_champion()  # skipped unless there is a candidate and a person is asked
    promote_champion = platform.promote_champion()

    chain(
        wait_for_window,
        extract_window,
        validate_window,
        models,
        compare_windows,
        record_verdict,
        decide_approval,
        approve_champion,
        promote_champion,
    )
    validate_window >> data_report_task()  # reports for people, beside the pipeline
    record_verdict >> model_report_task()

add_artifact_links(dag)
