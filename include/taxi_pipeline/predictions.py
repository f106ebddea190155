"""The local batch scores table: a DuckDB file that plays the BigQuery table `predictions`.

One row per scored trip: `day` (the scored day; BigQuery partitions the table by it),
`unique_key`, `model_version`, `probability`, `scored_at`. Loading a day replaces that day's rows
in one transaction, so a rerun or a backfill of a day never duplicates a trip (on BigQuery a load
into the day's partition with WRITE_TRUNCATE does the same).

DuckDB lets one process write a file at a time: every write holds a file lock beside it, so
backfilled days load one after the other instead of failing on DuckDB's own lock.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date
from pathlib import Path

from taxi_pipeline import files
from taxi_pipeline.assets import PREDICTIONS_TABLE
from taxi_pipeline.warehouse import connect  # the warehouse's DuckDB session (UTC), for this file too

COLUMNS = {  # the table's schema; the BigQuery table's too (platforms.gcp)
    "day": "DATE",
    "unique_key": "VARCHAR",
    "model_version": "BIGINT",
    "probability": "DOUBLE",
    "scored_at": "TIMESTAMPTZ",
}
BIGQUERY_TYPES = {
    "DATE": "DATE",
    "VARCHAR": "STRING",
    "BIGINT": "INT64",
    "DOUBLE": "FLOAT64",
    "TIMESTAMPTZ": "TIMESTAMP",
}
SCORE_FILES = "predictions-*.csv"  # the shards taxi_model.batch_score writes, with a header


def bigquery_schema() -> list[dict]:
    return [{"name": name, "type": BIGQUERY_TYPES[kind], "mode": "REQUIRED"} for name, kind in COLUMNS.items()]


@contextmanager
def _writing(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.lock(f"{path}.lock"), connect(path, read_only=False) as con:
        columns = ", ".join(f"{name} {kind} NOT NULL" for name, kind in COLUMNS.items())
        con.execute(f"CREATE TABLE IF NOT EXISTS {PREDICTIONS_TABLE} ({columns})")
        yield con


def load_day(path: Path, day: date, scores_dir: str) -> int:
    """Replace the rows of `day` with the scores under `scores_dir`; returns the rows loaded."""
    pattern = files.join(scores_dir, SCORE_FILES)
    if not files.glob(pattern):
        raise FileNotFoundError(f"no scores at {pattern}: the scoring step wrote none")
    with _writing(path) as con:
        con.execute("BEGIN TRANSACTION")
        con.execute(f"DELETE FROM {PREDICTIONS_TABLE} WHERE day = $day", {"day": day})
        con.execute(
            f"""INSERT INTO {PREDICTIONS_TABLE}
            SELECT day, unique_key, model_version, probability, scored_at
            FROM read_csv($pattern, header = true, columns = $columns)""",
            {"pattern": pattern, "columns": COLUMNS},
        )
        (rows,) = con.execute(f"SELECT count(*) FROM {PREDICTIONS_TABLE} WHERE day = $day", {"day": day}).fetchone()
        con.execute("COMMIT")
    return rows


def read_day(path: Path, day: date):
    """The scores of `day` as a DataFrame (empty when none were loaded)."""
    import pandas as pd

    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    with files.lock(f"{path}.lock"), connect(path) as con:
        return con.execute(f"SELECT * FROM {PREDICTIONS_TABLE} WHERE day = $day ORDER BY unique_key", {"day": day}).df()
