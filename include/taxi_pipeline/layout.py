"""The artifact layout: the one place that says where a run's artifacts live.

    {artifact_root}/{dag_id}/window={window.key}/run={run_id}/
        data/{train,eval}/part-*.csv            the run's window, extracted (daily DAG)
        data/reference/train/part-*.csv         the previous window, the drift reference (daily DAG)
        data/{newest,recent,long}/{train,eval}/ the named windows of the sliding-window DAG
        validation/[<window name>/]             result.json, summary.txt, data_docs/, statistics.json,
                                                anomalies.json, schema.yaml (the version it was checked against)
        variants/{variant}/transform/           transform graph + transformed TFRecords
        variants/{variant}/model/               SavedModel
        variants/{variant}/logs/                TensorBoard logs
        variants/{variant}/evaluation/          TFMA output + blessing.json
        variants/{variant}/export_check/        is the exported model servable? report.json
        window_comparison/                      recent vs long (sliding-window DAG)
        scores/predictions-*.csv, summary.json  the day's batch scores (batch-scoring DAG)
        predictions/part-*.csv                  the day's scores, read back from the table (monitor DAG)
        monitor/result.json                     the day's monitor result (monitor DAG)
        reports/{data,model,monitor}.html       the run's reports, for people (taxi_pipeline.reports)
    {artifact_root}/{dag_id}/history/           one verdict per window (sliding-window DAG), one row per day (monitor)
    {artifact_root}/{dag_id}/retrain_requests/  the monitor's retraining requests, one per day at most
    {artifact_root}/{dag_id}/schema/v0001.yaml  the data schema, a file per version (taxi_pipeline.schema)

Keyed by DAG, window and run, so a backfill and the daily run never write the same paths, and a
retry of the same run rewrites its own paths in place. Paths are strings joined with "/" so that
the same layout works under a local folder and under a `gs://` root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from taxi_pipeline.window import Window

SPLITS = ("train", "eval")


def _path_safe(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", run_id)


@dataclass(frozen=True)
class RunLayout:
    artifact_root: str
    dag_id: str
    window: Window
    run_id: str

    @property
    def run_dir(self) -> str:
        root = self.artifact_root.rstrip("/")
        return f"{root}/{self.dag_id}/window={self.window.key}/run={_path_safe(self.run_id)}"

    @property
    def data_dir(self) -> str:
        return f"{self.run_dir}/data"

    def window_data_dir(self, name: str = "") -> str:
        """The extracted splits of a named window of the run ("" = the run's own window)."""
        return f"{self.data_dir}/{name}" if name else self.data_dir

    def split_dir(self, split: str, window: str = "") -> str:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}")
        return f"{self.window_data_dir(window)}/{split}"

    def split_glob(self, split: str, window: str = "") -> str:
        return f"{self.split_dir(split, window)}/part-*.csv"

    def window_glob(self, window: str) -> str:
        """Every split of a named window (all its trips)."""
        if not window:
            raise ValueError("the run's own window also holds the drift reference: name a split")
        return f"{self.window_data_dir(window)}/*/part-*.csv"

    def validation_dir(self, window: str = "") -> str:
        return f"{self.run_dir}/validation/{window}".rstrip("/")

    def variant_dir(self, variant: str) -> str:
        return f"{self.run_dir}/variants/{variant}"

    def transform_dir(self, variant: str) -> str:
        return f"{self.variant_dir(variant)}/transform"

    def model_dir(self, variant: str) -> str:
        return f"{self.variant_dir(variant)}/model"

    def logs_dir(self, variant: str) -> str:
        return f"{self.variant_dir(variant)}/logs"

    def evaluation_dir(self, variant: str) -> str:
        return f"{self.variant_dir(variant)}/evaluation"

    def export_check_dir(self, variant: str) -> str:
        return f"{self.variant_dir(variant)}/export_check"

    @property
    def window_comparison_dir(self) -> str:
        """The sliding-window DAG's recent-vs-long comparison."""
        return f"{self.run_dir}/window_comparison"

    @property
    def scores_dir(self) -> str:
        """The batch-scoring DAG's scores of the run's day, before they are loaded into the warehouse."""
        return f"{self.run_dir}/scores"

    @property
    def predictions_dir(self) -> str:
        """The monitor DAG's copy of the day's scores, read back from the predictions table."""
        return f"{self.run_dir}/predictions"

    @property
    def monitor_dir(self) -> str:
        return f"{self.run_dir}/monitor"

    @property
    def retrain_requests_dir(self) -> str:
        """The monitor's retraining requests: a file per day, so at most one a day (outside any run)."""
        return f"{self.artifact_root.rstrip('/')}/{self.dag_id}/retrain_requests"

    @property
    def reports_dir(self) -> str:
        return f"{self.run_dir}/reports"

    def report_path(self, kind: str) -> str:
        """The run's `data` or `model` report."""
        if kind not in ("data", "model", "monitor"):
            raise ValueError(f"unknown report {kind!r}")
        return f"{self.reports_dir}/{kind}.html"

    @property
    def schema_dir(self) -> str:
        """The DAG's data schema, one file per version (taxi_pipeline.schema), shared by its runs."""
        return f"{self.artifact_root.rstrip('/')}/{self.dag_id}/schema"

    @property
    def history_dir(self) -> str:
        """One verdict per window, across the DAG's runs (outside any run's folder)."""
        return f"{self.artifact_root.rstrip('/')}/{self.dag_id}/history"
