"""The local platform: the stages on this machine (DuckDB, a folder for GCS, Beam's direct runner,
local processes for the runtime steps and the TFJob, the local model server)."""

from __future__ import annotations

from taxi_pipeline import assets
from taxi_pipeline.branches import Branch
from taxi_pipeline.platforms import (
    Platform,
    check_export_arguments,
    compare_windows_arguments,
    evaluate_arguments,
    score_options,
    train_arguments,
    transform_options,
)
from taxi_pipeline.platforms.artifact_urls import LocalLinks
from taxi_pipeline.platforms.docs import (
    CHECK_EXPORT_DOC,
    EVALUATE_DOC,
    EXPORT_PREDICTIONS_DOC,
    EXTRACT_DOC,
    LOAD_PREDICTIONS_DOC,
    PROMOTE_DOC,
    PUSH_DOC,
    SCORE_DOC,
    TRAIN_DOC,
    TRANSFORM_DOC,
    WAIT_DOC,
    WAIT_FOR_SCORES_DOC,
    WINDOW_COMPARISON_DOC,
)
from taxi_pipeline.pools import DEPLOY_POOL, HEAVY_POOL
from taxi_pipeline.settings import get_settings


class LocalPlatform(Platform):
    name = "local"
    links = LocalLinks()  # where the UI's extra links point (taxi_pipeline.platforms.artifact_urls)

    def wait_for_window(self):
        from taxi_pipeline.operators.sensors import WindowLandedSensor

        return WindowLandedSensor(task_id="wait_for_window", doc_md=WAIT_DOC, inlets=[assets.trips()])

    def extract_window(self, dag_id: str):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.callables import extract_window_to_artifacts

        return PythonOperator(
            task_id="extract_window",
            python_callable=extract_window_to_artifacts,
            doc_md=EXTRACT_DOC,
            outlets=[assets.window_extract(dag_id)],
        )

    def _beam_pipeline(self, task_id: str, module: str, options: dict, doc_md: str):
        # Not the provider's BeamRunPythonPipelineOperator: importing it costs most of a parse (see the operator).
        from taxi_pipeline.operators.runtime import LocalBeamPipelineOperator

        return LocalBeamPipelineOperator(
            # FnApiRunner: the direct runner's engine, without its attempt to download Prism.
            task_id=task_id,
            runner="FnApiRunner",
            module=module,
            py_interpreter=get_settings().runtime_python,
            pipeline_options=options,
            doc_md=doc_md,
            pool=HEAVY_POOL,
        )

    def transform(self, branch: Branch):
        return self._beam_pipeline("transform", "taxi_model.transform", transform_options(branch), TRANSFORM_DOC)

    def train(self, branch: Branch):
        from taxi_pipeline.operators.runtime import RuntimeModuleOperator

        return RuntimeModuleOperator(
            task_id="train",
            module="taxi_model.trainer",
            doc_md=TRAIN_DOC,
            pool=HEAVY_POOL,
            arguments=train_arguments(branch),
        )

    def evaluate(self, branch: Branch):
        from taxi_pipeline.operators.runtime import RuntimeModuleOperator

        return RuntimeModuleOperator(
            task_id="evaluate",
            module="taxi_model.evaluate",
            doc_md=EVALUATE_DOC,
            pool=HEAVY_POOL,
            arguments=evaluate_arguments(branch, get_settings().serving_root),
        )

    def score_trips(self):
        return self._beam_pipeline("score_trips", "taxi_model.batch_score", score_options(), SCORE_DOC)

    def load_predictions(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.callables import load_predictions

        return PythonOperator(
            task_id="load_predictions",
            python_callable=load_predictions,
            doc_md=LOAD_PREDICTIONS_DOC,
            outlets=[assets.predictions()],
        )

    def wait_for_scores(self):
        from taxi_pipeline.operators.sensors import ScoresLandedSensor

        return ScoresLandedSensor(task_id="wait_for_scores", doc_md=WAIT_FOR_SCORES_DOC, inlets=[assets.predictions()])

    def export_predictions(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.callables import export_predictions

        return PythonOperator(
            task_id="export_predictions", python_callable=export_predictions, doc_md=EXPORT_PREDICTIONS_DOC
        )

    def compare_windows(self, recent: Branch, long: Branch):
        from taxi_pipeline.operators.runtime import RuntimeModuleOperator

        return RuntimeModuleOperator(
            task_id="compare_windows",
            module="taxi_model.window_comparison",
            doc_md=WINDOW_COMPARISON_DOC,
            pool=HEAVY_POOL,
            trigger_rule="none_failed",  # after the pushes, a skipped one (not blessed) included
            arguments=compare_windows_arguments(recent, long),
        )

    def check_export(self, branch: Branch):
        from taxi_pipeline.operators.runtime import RuntimeModuleOperator

        return RuntimeModuleOperator(
            task_id="check_export",
            module="taxi_model.export_check",
            doc_md=CHECK_EXPORT_DOC,
            arguments=check_export_arguments(branch),
        )

    def push(self, branch: Branch):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.callables import push_variant

        return PythonOperator(
            task_id="push",
            python_callable=push_variant,
            op_kwargs={"variant": branch.name, "model": branch.pushed_as},
            doc_md=PUSH_DOC,
            pool=DEPLOY_POOL,
            outlets=[assets.served_model(branch.pushed_as)],
        )

    def promote_champion(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.callables import promote_champion
        from taxi_pipeline.serving_root import CHAMPION_MODEL

        return PythonOperator(
            task_id="promote_champion",
            python_callable=promote_champion,
            trigger_rule="none_failed",
            doc_md=PROMOTE_DOC,
            pool=DEPLOY_POOL,
            outlets=[assets.served_model(CHAMPION_MODEL)],
        )
