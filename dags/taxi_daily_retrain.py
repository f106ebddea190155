"""taxi_daily_retrain: Workflow 1 of the Kubeflow taxi example, every day.

wait_for_window >> extract_window >> validate_window >> select_variants
    >> for each variant (standard, coarse): transform >> train >> evaluate >> check_export >> push
    >> compare_variants >> decide_approval >> approve_champion (a person, when asked) >> promote_champion

The training window is the `window_days` before the run's data_interval_end (or the `window_end`
Param of a manual run, or the `window_end` of the serving monitor's retraining request that started
it); the `variants` Param picks the variants trained. Every stage is built
by the platform chosen with TAXI_PLATFORM (`local` by default, or `gcp`); see
include/taxi_pipeline/platforms/.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.python import BranchPythonOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronDataIntervalTimetable, Param, TaskGroup, chain

from taxi_model.variants import VARIANTS
from taxi_pipeline import assets, callables
from taxi_pipeline.branches import Branch
from taxi_pipeline.callables import SELECT_VARIANTS_DOC
from taxi_pipeline.dag_defaults import (
    DEFAULT_ARGS,
    MACROS,
    common_params,
    on_call_doc,
    require_approval_param,
    run_deadline,
)
from taxi_pipeline.operators.sensors import PreviousRunSettledSensor
from taxi_pipeline.platforms import get_platform
from taxi_pipeline.platforms.extra_links import add_artifact_links
from taxi_pipeline.reports.report_tasks import data_report_task, model_report_task
from taxi_pipeline.serving_root import model_name

platform = get_platform()

with DAG(
    dag_id="taxi_daily_retrain",
    # daily, and out of schedule when the serving monitor asks (taxi_model_monitor's request_retraining)
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"), assets=[assets.retrain_request()]
    ),
    start_date=datetime(2014, 1, 1),
    max_active_runs=2,
    tags=["taxi", "workflow-1", "retraining", f"platform:{platform.name}"],
    doc_md=__doc__ + on_call_doc("taxi_daily_retrain", ""),
    default_args=DEFAULT_ARGS,
    deadline=run_deadline("taxi_daily_retrain", hours=8),
    params={
        "window_days": Param(
            365,
            title="Window days",
            type="integer",
            minimum=1,
            maximum=3650,
            description="Days of trips before the run's window end to train on.",
        ),
        "variants": Param(
            list(VARIANTS),
            type="array",
            items={"type": "string", "enum": list(VARIANTS)},
            minItems=1,
            uniqueItems=True,
            examples=list(VARIANTS),
            title="Variants",
            description="The preprocessing variants to train, evaluate and deploy; the others are "
            "skipped. The champion is the best blessed one among them.",
        ),
        "require_approval": require_approval_param("never"),  # unattended daily runs never wait
        **common_params(min_window_rows=500),
    },
    user_defined_macros=MACROS,
) as dag:
    wait_for_window = platform.wait_for_window()
    extract_window = platform.extract_window(dag.dag_id)
    validate_window = platform.validate_window()
    select_variants = BranchPythonOperator(
        task_id="select_variants", python_callable=callables.select_variants, doc_md=SELECT_VARIANTS_DOC
    )

    # Each variant is judged against what the previous window left in service: wait for its deploys.
    wait_for_previous_deploys = PreviousRunSettledSensor(
        task_id="wait_for_previous_deploys", task_ids=[*(f"{v}.push" for v in VARIANTS), "promote_champion"]
    )

    variants = []
    for variant in VARIANTS:
        branch = Branch(name=variant, variant=variant, served_model=model_name(variant))
        with TaskGroup(group_id=variant, tooltip=f"the {variant} preprocessing variant") as group:
            evaluate = platform.evaluate(branch)
            wait_for_previous_deploys >> evaluate
            chain(
                platform.transform(branch),
                platform.train(branch),
                evaluate,
                platform.check_export(branch),
                platform.push(branch),
            )
        variants.append(group)

    compare_variants = platform.compare_variants()
    decide_approval = platform.decide_approval()
    approve_champion = platform.approve_champion()  # skipped unless the require_approval Param asks a person
    promote_champion = platform.promote_champion()

    chain(
        wait_for_window,
        extract_window,
        validate_window,
        select_variants,
        variants,
        compare_variants,
        decide_approval,
        approve_champion,
        promote_champion,
    )
    validate_window >> wait_for_previous_deploys
    validate_window >> data_report_task()  # reports for people, beside the pipeline
    compare_variants >> model_report_task()

add_artifact_links(dag)
