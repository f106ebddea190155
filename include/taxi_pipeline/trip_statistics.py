"""Statistics of a set of trips: the one module that measures data (TFDV's DatasetFeatureStatistics).

Validation compares a window's statistics with the schema (`taxi_pipeline.schema`), with the
previous window's and between its own splits (`taxi_pipeline.anomalies`). Nothing in it knows of
windows, so what a served model received can be compared with its training window's statistics the
same way (`anomalies.compare`, for the serving monitor).
A statistics document is plain JSON, written beside the run's validation:

    {"num_examples": n,
     "label": {"name": "big_tipper", "positives": k, "base_rate": k / n,
               "by_month": {"2015-07": [rows, positives], ...}},  # by the trip's start, UTC
     "features": {column: {"type": "float" | "int" | "string", "count": present, "nulls": missing,
                           "null_fraction": missing / n,
                           # numeric columns
                           "text_values": values that are not finite numbers, "text_examples": [...],
                           "min", "max", "mean", "std", "quantiles": [101 percentiles],
                           # categorical columns
                           "unique": distinct values, "frequencies": {value: rows, ...},
                           "other_rows": rows of the values past MAX_NAMED_VALUES}}}

Identifier columns (the trip key, census tracts) get counts and nulls only: their values are ids,
so a distribution of them says nothing.
"""

from __future__ import annotations

from taxi_model.columns import BIG_TIPPER_TIP_SHARE, RAW_COLUMN_TYPES

LABEL = "big_tipper"
CATEGORICAL_COLUMNS = ("payment_type", "company")
ID_COLUMNS = ("unique_key", "pickup_census_tract", "dropoff_census_tract")
# The numeric columns whose distribution is measured (all but the identifiers).
DISTRIBUTION_COLUMNS = tuple(c for c, kind in RAW_COLUMN_TYPES if kind != "string" and c not in ID_COLUMNS)
SPLIT_COLUMN = "_split"  # in a frame of several splits' trips: the split of each row
QUANTILE_POINTS = 101  # percentiles: enough to place another window's values in this one's bins
# Categorical values kept by name, most frequent first; the rest are counted together. The sample's
# companies number about 120 a year, so every value is named there.
MAX_NAMED_VALUES = 1000


def label_of(frame):
    """The label per row (taxi_model.features.big_tipper in NumPy): a tip over 20% of a known fare."""
    import pandas as pd

    fare = pd.to_numeric(frame["fare"], errors="coerce")
    tips = pd.to_numeric(frame["tips"], errors="coerce")
    return (tips > BIG_TIPPER_TIP_SHARE * fare) & fare.notna()


def _numeric(values) -> dict:
    import numpy as np
    import pandas as pd

    present = values.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    finite = numbers.notna() & np.isfinite(numbers.astype(float))
    text = present[~finite]  # text, and "inf" or "1e400" that read as infinite
    numbers = numbers[finite].to_numpy(dtype=float)
    stats = {"text_values": len(text), "text_examples": text.astype(str).unique()[:3].tolist()}
    if len(numbers):
        stats.update(
            min=float(numbers.min()),
            max=float(numbers.max()),
            mean=float(numbers.mean()),
            std=float(numbers.std()),
            quantiles=np.quantile(numbers, np.linspace(0, 1, QUANTILE_POINTS)).tolist(),
        )
    return stats


def value_shares(stats: dict) -> dict[str, float]:
    """Each named value's share of a categorical column's present values."""
    frequencies = stats.get("frequencies", {})
    total = sum(frequencies.values()) + stats.get("other_rows", 0)
    return {value: rows / total for value, rows in frequencies.items()} if total else {}


def _categorical(values) -> dict:
    counts = values.dropna().astype(str).value_counts(sort=False)
    # Most frequent first, ties by value: the same data always gives the same document.
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    named = dict((value, int(rows)) for value, rows in ordered[:MAX_NAMED_VALUES])
    return {
        "unique": len(ordered),
        "frequencies": named,
        "other_rows": int(sum(rows for _, rows in ordered[MAX_NAMED_VALUES:])),
    }


def _by_month(timestamps, labels) -> dict[str, list[int]]:
    """[rows, positives] of the label per month of the trips' start: a part of a window whose label
    changed meaning shows there even when the whole window's base rate hides it."""
    import pandas as pd

    seconds = pd.to_numeric(timestamps, errors="coerce")
    months = pd.to_datetime(seconds, unit="s", utc=True).dt.strftime("%Y-%m")
    grouped = labels.groupby(months).agg(["size", "sum"])
    return {month: [int(rows), int(positives)] for month, (rows, positives) in grouped.iterrows()}


def dataset_statistics(frame) -> dict:
    """The statistics of one set of trips (a DataFrame of window columns; missing columns are left out)."""
    n = len(frame)
    features = {}
    for column, kind in RAW_COLUMN_TYPES:
        if column not in frame:
            continue
        values = frame[column]
        nulls = int(values.isna().sum())
        stats = {"type": kind, "count": n - nulls, "nulls": nulls, "null_fraction": nulls / n if n else 0.0}
        if column in CATEGORICAL_COLUMNS:
            stats.update(_categorical(values))
        elif column in DISTRIBUTION_COLUMNS:
            stats.update(_numeric(values))
        features[column] = stats
    label = None
    if {"fare", "tips"} <= set(frame.columns):
        labels = label_of(frame)
        positives = int(labels.sum())
        label = {"name": LABEL, "positives": positives, "base_rate": positives / n if n else None}
        if "trip_start_timestamp" in frame:
            label["by_month"] = _by_month(frame["trip_start_timestamp"], labels)
    return {"num_examples": n, "label": label, "features": features}


def generate_statistics(splits: dict) -> dict:
    """Statistics of each split of a window (name -> DataFrame) and of all of them together."""
    import pandas as pd

    present = [f for f in splits.values() if len(f.columns)]
    whole = pd.concat(present, join="inner", ignore_index=True) if present else pd.DataFrame()
    return {
        "splits": {name: dataset_statistics(frame) for name, frame in splits.items()},
        "all": dataset_statistics(whole),
    }
