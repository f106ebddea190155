"""Extraction of a run's windows from the local warehouse into the run's artifact layout."""

from __future__ import annotations

from pathlib import Path

from taxi_pipeline.files import atomic_directory
from taxi_pipeline.layout import SPLITS, RunLayout
from taxi_pipeline.warehouse import export_split
from taxi_pipeline.window import Window


def extract_windows(warehouse: Path, layout: RunLayout, windows: dict[str, Window]) -> dict[str, dict[str, int]]:
    """Write the train and eval splits of each named window, all published at once under the run's
    data folder; returns the row count of each split of each window."""
    rows: dict[str, dict[str, int]] = {}
    with atomic_directory(layout.data_dir) as staging:
        for name, window in windows.items():
            rows[name or "window"] = {}
            for split in SPLITS:
                directory = staging / name / split if name else staging / split
                directory.mkdir(parents=True)
                rows[name or "window"][split] = export_split(
                    warehouse, window, split, str(directory / "part-00000.csv")
                )
    return rows
