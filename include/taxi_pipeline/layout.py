"""The artifact layout: the one place that says where a run's artifacts live.

    {artifact_root}/{dag_id}/window={window.key}/run={run_id}/
        data/{train,eval,reference}/part-*.csv   extracted splits (reference = previous window, for drift)
        validation/                             result.json, summary.txt, data_docs/
        variants/{variant}/transform/           transform graph + transformed TFRecords
        variants/{variant}/model/               SavedModel
        variants/{variant}/logs/                TensorBoard logs
        variants/{variant}/evaluation/          TFMA output + blessing.json

Keyed by DAG, window and run, so a backfill and the daily run never write the same paths, and a
retry of the same run rewrites its own paths in place. Paths are strings joined with "/" so that
the same layout works under a local folder and under a `gs://` root.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from taxi_pipeline.window import Window

SPLITS = ("train", "eval")
REFERENCE = "reference"


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

    def split_dir(self, split: str) -> str:
        if split not in SPLITS + (REFERENCE,):
            raise ValueError(f"unknown split {split!r}")
        return f"{self.data_dir}/{split}"

    def split_glob(self, split: str) -> str:
        return f"{self.split_dir(split)}/part-*.csv"

    @property
    def validation_dir(self) -> str:
        return f"{self.run_dir}/validation"

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

    @property
    def summary_path(self) -> str:
        return f"{self.run_dir}/summary.json"
