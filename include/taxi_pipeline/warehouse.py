"""The local warehouse: a DuckDB file that plays BigQuery's `chicago_taxi_trips.taxi_trips`.

Same column names and types as the public table for the columns the pipeline reads; TIMESTAMP
becomes TIMESTAMPTZ (an instant, as in BigQuery) and the session runs in UTC. The sample has no
`unique_key`, so one is derived from the row's content: stable across loads, and an exact
duplicate row across the two sample files (there is one) is loaded once.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from taxi_pipeline.queries import LOCAL_SOURCE_TABLE, duckdb_sql
from taxi_pipeline.window import Window

# Column types of the public table (BigQuery -> DuckDB) for the columns the pipeline reads.
TRIP_COLUMNS = {
    "unique_key": "VARCHAR",
    "trip_start_timestamp": "TIMESTAMPTZ",
    "trip_seconds": "BIGINT",
    "trip_miles": "DOUBLE",
    "pickup_census_tract": "BIGINT",
    "dropoff_census_tract": "BIGINT",
    "pickup_community_area": "BIGINT",
    "dropoff_community_area": "BIGINT",
    "fare": "DOUBLE",
    "tips": "DOUBLE",
    "payment_type": "VARCHAR",
    "company": "VARCHAR",
    "pickup_latitude": "DOUBLE",
    "pickup_longitude": "DOUBLE",
    "dropoff_latitude": "DOUBLE",
    "dropoff_longitude": "DOUBLE",
}
# The sample CSV's columns, in file order (it also has the month/hour/day the query derives).
SAMPLE_COLUMNS = (
    "pickup_community_area",
    "fare",
    "trip_start_month",
    "trip_start_hour",
    "trip_start_day",
    "trip_start_timestamp",
    "pickup_latitude",
    "pickup_longitude",
    "dropoff_latitude",
    "dropoff_longitude",
    "trip_miles",
    "pickup_census_tract",
    "dropoff_census_tract",
    "payment_type",
    "company",
    "trip_seconds",
    "dropoff_community_area",
    "tips",
)
KEY_SEPARATOR = "\x1f"


def unique_key(fields: list[str]) -> str:
    """The derived key of a sample row: sha1 of its raw CSV fields (how the loader computes it)."""
    return hashlib.sha1(KEY_SEPARATOR.join(fields).encode()).hexdigest()


def _connect(path: Path, read_only: bool):
    import duckdb

    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("SET TimeZone = 'UTC'")
    return con


@contextmanager
def connect(path: Path, read_only: bool = True):
    con = _connect(path, read_only)
    try:
        yield con
    finally:
        con.close()


def _typed(column: str, types: dict[str, str]) -> str:
    if column == "trip_start_timestamp":
        return "to_timestamp(CAST(trip_start_timestamp AS DOUBLE))"
    target = types[column]
    # Integer columns are written as "180.0" in one of the samples.
    source = f"CAST({column} AS DOUBLE)" if target == "BIGINT" else column
    return f"CAST({source} AS {target})"


def load_trips(warehouse: Path, csv_files: list[Path], column_types: dict[str, str] | None = None) -> int:
    """(Re)build the warehouse from sample-format CSVs, atomically; returns the number of trips.

    `column_types` overrides the public table's types (tests build broken warehouses with it).
    """
    types = {**TRIP_COLUMNS, **(column_types or {})}
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    staging = warehouse.with_name(f"{warehouse.name}.tmp-{os.getpid()}")
    staging.unlink(missing_ok=True)
    con = _connect(staging, read_only=False)
    try:
        files = ", ".join(f"'{p}'" for p in csv_files)
        raw_key = " || chr(31) || ".join(f"coalesce({c}, '')" for c in SAMPLE_COLUMNS)
        selected = ",\n  ".join(f"{_typed(c, types)} AS {c}" for c in TRIP_COLUMNS if c != "unique_key")
        con.execute("CREATE SCHEMA chicago_taxi_trips")
        con.execute(f"""
            CREATE TABLE {LOCAL_SOURCE_TABLE} AS
            SELECT sha1({raw_key}) AS unique_key,
              {selected}
            FROM read_csv([{files}], header = true, all_varchar = true)
            QUALIFY row_number() OVER (PARTITION BY unique_key ORDER BY unique_key) = 1
        """)
        (rows,) = con.execute(f"SELECT count(*) FROM {LOCAL_SOURCE_TABLE}").fetchone()
    finally:
        con.close()
    staging.replace(warehouse)
    return rows


def latest_trip_start(warehouse: Path) -> datetime | None:
    """The watermark: the newest trip start the warehouse holds (None when it is empty)."""
    with connect(warehouse) as con:
        (latest,) = con.execute(duckdb_sql("watermark")).fetchone()
    return latest.astimezone(UTC) if latest is not None else None


def window_params(window: Window, split: str) -> dict[str, str]:
    return {"window_start": window.start.isoformat(), "window_end": window.end.isoformat(), "split": split}


def export_split(warehouse: Path, window: Window, split: str, csv_path: str) -> int:
    """Write one split of `window` to `csv_path` (with a header); returns its row count."""
    with connect(warehouse) as con:
        rel = con.sql(duckdb_sql("window"), params=window_params(window, split))
        rel.write_csv(csv_path, header=True)
        (rows,) = con.execute(f"SELECT count(*) FROM read_csv('{csv_path}', header = true)").fetchone()
    return rows
