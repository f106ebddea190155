"""Extraction of a window from the local warehouse into the run's artifact layout."""
from __future__ import annotations

from pathlib import Path

from taxi_pipeline.layout import REFERENCE, SPLITS, RunLayout
from taxi_pipeline.storage import atomic_directory
from taxi_pipeline.warehouse import export_split


def extract_window(warehouse: Path, layout: RunLayout) -> dict[str, int]:
    """Write the train and eval splits of the run's window, and the previous window's train split
    as the drift reference, all published at once; returns the row count of each."""
    jobs = {split: (layout.window, split) for split in SPLITS}
    jobs[REFERENCE] = (layout.window.previous(), "train")
    rows = {}
    with atomic_directory(layout.data_dir) as staging:
        for name, (window, split) in jobs.items():
            (staging / name).mkdir()
            rows[name] = export_split(warehouse, window, split, str(staging / name / "part-00000.csv"))
    return rows
