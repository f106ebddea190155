"""The sliding-window DAG's history of verdicts: one row per window, idempotent per window."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from taxi_pipeline.storage import write_text_atomically


def write_history(history_dir: str, row: dict) -> str:
    """Write the row of `row['window_key']` (replacing a rerun's), then the whole history as a CSV
    sorted by window; returns the CSV's path."""
    directory = Path(history_dir)
    write_text_atomically(str(directory / f"{row['window_key']}.json"), json.dumps(row, indent=1))
    rows = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(str(directory / "history.csv"), out.getvalue())
    return str(directory / "history.csv")
