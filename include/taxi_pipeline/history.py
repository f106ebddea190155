"""The sliding-window DAG's history of verdicts: one row per window, idempotent per window."""

from __future__ import annotations

import csv
import io
import json

from taxi_pipeline import files


def write_history(history_dir: str, row: dict) -> str:
    """Write the row of `row['window_key']` (replacing a rerun's), then the whole history as a CSV
    sorted by window; returns the CSV's path."""
    files.write_text(f"{history_dir}/{row['window_key']}.json", json.dumps(row, indent=1))
    rows = [files.read_json(p) for p in files.glob(f"{history_dir}/*.json")]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(f"{history_dir}/history.csv", out.getvalue())
    return f"{history_dir}/history.csv"
