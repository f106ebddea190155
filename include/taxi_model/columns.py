"""The window's raw columns: names in file order and their raw types.

Pure Python (no TensorFlow): the Airflow side reads it too, as the contract between the window SQL
(taxi_pipeline.queries), the extracted CSVs and the feature contract (taxi_model.features).

Every column may be empty. Nullable integer columns are `float` because writers emit them as "5.0"
when a column has NULLs; only the columns derived from the (never NULL) trip start are `int`.
Census tracts are 11-digit ids that float32 would round, so they are `string` (the model does not
use them).
"""

from __future__ import annotations

import csv
import glob

RAW_COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("unique_key", "string"),
    ("pickup_community_area", "float"),
    ("fare", "float"),
    ("trip_start_month", "int"),
    ("trip_start_hour", "int"),
    ("trip_start_day", "int"),
    ("trip_start_timestamp", "int"),
    ("pickup_latitude", "float"),
    ("pickup_longitude", "float"),
    ("dropoff_latitude", "float"),
    ("dropoff_longitude", "float"),
    ("trip_miles", "float"),
    ("pickup_census_tract", "string"),
    ("dropoff_census_tract", "string"),
    ("payment_type", "string"),
    ("company", "string"),
    ("trip_seconds", "float"),
    ("dropoff_community_area", "float"),
    ("tips", "float"),
)
RAW_COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in RAW_COLUMN_TYPES)

# The label (taxi_model.features.big_tipper): a tip of more than this share of the fare.
BIG_TIPPER_TIP_SHARE = 0.2


def read_rows(csv_pattern: str, limit: int | None = None) -> list[dict[str, str]]:
    """The rows (column -> text, '' = NULL) of the window-CSV files a glob names, in file order;
    at most `limit`. Each file has its header. No file matching gives no rows. A URL (gs://) is
    read through tf.io.gfile (imported only then: this module stays pure Python locally)."""
    if "://" in csv_pattern:
        import io

        import tensorflow as tf

        def opener(path):
            with tf.io.gfile.GFile(path, "r") as f:
                return io.StringIO(f.read(), newline="")

        paths = tf.io.gfile.glob(csv_pattern)
    else:
        paths, opener = glob.glob(csv_pattern), lambda p: open(p, newline="")
    rows: list[dict[str, str]] = []
    for path in sorted(paths):
        with opener(path) as f:
            for row in csv.DictReader(f):
                if limit is not None and len(rows) >= limit:
                    return rows
                rows.append(row)
    return rows
