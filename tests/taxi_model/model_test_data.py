"""Test data and helpers for the taxi_model tests: a synthetic window of trips in the window-CSV format."""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from taxi_model.columns import RAW_COLUMN_NAMES

REPO = Path(__file__).resolve().parents[2]
INCLUDE = REPO / "include"
TRAIN_ROWS, EVAL_ROWS = 900, 300  # the rows of the `window_dir` fixture
COLUMNS = RAW_COLUMN_NAMES
PAYMENT_TYPES = ("Credit Card", "Cash", "No Charge", "Unknown", "Dispute", "Mobile")
PAYMENT_SHARES = (0.42, 0.52, 0.03, 0.015, 0.005, 0.01)
COMPANIES = (
    "",
    "Taxi Affiliation Services",
    "Dispatch Taxi Affiliation",
    "Flash Cab",
    "Yellow Cab",
    "Blue Ribbon Taxi Association Inc.",
    "Choice Taxi Association",
    "Northwest Management LLC",
    "Chicago Carriage Cab Corp",
    "KOAM Taxi Association",
    "Top Cab Affiliation",
    "Medallion Leasin",
    "Star North Management LLC",
    "Chicago Medallion Management",
    "City Service",
)
COMPANY_SHARES = np.array([30, 18, 10, 8, 6, 5, 4, 4, 3, 3, 3, 2, 2, 1, 1], dtype=float)


def synthetic_trips(n: int, seed: int) -> list[dict[str, str]]:
    """`n` window rows as CSV text ('' = NULL), with the shape of the real Chicago-taxi data.

    Nullable integer columns are written the way pandas writes them ("8.0"); about a quarter of
    the trips are big tippers, nearly all of them paying by credit card.
    """
    rng = np.random.default_rng(seed)
    start = datetime(2015, 1, 1, tzinfo=UTC).timestamp()
    timestamps = (start + rng.integers(0, 365 * 86400, n)) // 900 * 900  # 15-minute rounding, as in the data
    seconds = np.clip(rng.lognormal(6.4, 0.7, n), 60, 7200).round(-1)
    miles = np.clip(seconds / 3600 * rng.normal(12, 4, n), 0, 40).round(1)
    fares = np.clip(3.25 + 1.8 * miles + 0.2 * seconds / 60 + rng.normal(0, 1, n), 3, 60).round(2)
    payments = rng.choice(PAYMENT_TYPES, n, p=PAYMENT_SHARES)
    big_tip_chance = np.where(payments == "Credit Card", 0.55, 0.01)
    tip_shares = np.where(rng.random(n) < big_tip_chance, rng.uniform(0.21, 0.35, n), rng.uniform(0, 0.19, n))
    tips = np.where(payments == "Credit Card", fares * tip_shares, np.where(rng.random(n) < 0.02, 1.0, 0.0)).round(2)
    companies = rng.choice(COMPANIES, n, p=COMPANY_SHARES / COMPANY_SHARES.sum())
    pickup_areas = rng.integers(1, 78, n)
    dropoff_areas = rng.integers(1, 78, n)

    def area_coordinates(areas):  # a rough point per community area, plus jitter
        return 41.65 + (areas % 12) * 0.03 + rng.normal(0, 0.005, n), -87.9 + (areas // 12) * 0.05 + rng.normal(
            0, 0.005, n
        )

    pickup_lat, pickup_lon = area_coordinates(pickup_areas)
    dropoff_lat, dropoff_lon = area_coordinates(dropoff_areas)
    pickup_missing = rng.random(n) < 0.08
    dropoff_missing = rng.random(n) < 0.15
    fare_missing = rng.random(n) < 0.01

    def text(value, missing=False, fmt="{}"):
        return "" if missing else fmt.format(value)

    rows = []
    for i in range(n):
        moment = datetime.fromtimestamp(int(timestamps[i]), tz=UTC)
        tract_missing = rng.random() < 0.6
        rows.append(
            {
                "unique_key": f"{rng.integers(0, 2**63):016x}{i:08x}",
                "pickup_community_area": text(pickup_areas[i], pickup_missing[i], "{:.1f}"),
                "fare": text(fares[i], fare_missing[i]),
                "trip_start_month": str(moment.month),
                "trip_start_hour": str(moment.hour),
                "trip_start_day": str(moment.isoweekday() % 7 + 1),  # 1 = Sunday, as BigQuery's DAYOFWEEK
                "trip_start_timestamp": str(int(timestamps[i])),
                "pickup_latitude": text(round(pickup_lat[i], 9), pickup_missing[i]),
                "pickup_longitude": text(round(pickup_lon[i], 9), pickup_missing[i]),
                "dropoff_latitude": text(round(dropoff_lat[i], 9), dropoff_missing[i]),
                "dropoff_longitude": text(round(dropoff_lon[i], 9), dropoff_missing[i]),
                "trip_miles": str(miles[i]),
                "pickup_census_tract": text(17031000000 + pickup_areas[i] * 100, tract_missing),
                "dropoff_census_tract": text(17031000000 + dropoff_areas[i] * 100, tract_missing or dropoff_missing[i]),
                "payment_type": payments[i],
                "company": companies[i],
                "trip_seconds": text(seconds[i], False, "{:.1f}"),
                "dropoff_community_area": text(dropoff_areas[i], dropoff_missing[i], "{:.1f}"),
                "tips": str(tips[i]),
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(split_dir: Path) -> list[dict[str, str]]:
    """All rows of a split's part files."""
    rows = []
    for path in sorted(split_dir.glob("part-*.csv")):
        with path.open(newline="") as f:
            rows.extend(csv.DictReader(f))
    return rows


def runtime_env() -> dict[str, str]:
    """Environment for subprocesses of the runtime venv that import `taxi_model`."""
    return {**os.environ, "PYTHONPATH": str(INCLUDE), "TF_CPP_MIN_LOG_LEVEL": "2"}


def train_args(transform_dir: Path, out_dir: Path, **settings):
    """The trainer's FnArgs on a transform output: the model to `out_dir/model`, its logs to
    `out_dir/logs`; `settings` are the other fields (steps, batch size, warmup examples)."""
    from taxi_model import trainer
    from taxi_model import transform_layout as layout

    return trainer.FnArgs(
        train_files=[layout.transformed_glob(str(transform_dir), "train")],
        eval_files=[layout.transformed_glob(str(transform_dir), "eval")],
        transform_graph=layout.transform_graph_dir(str(transform_dir)),
        serving_model_dir=str(out_dir / "model"),
        model_run_dir=str(out_dir / "logs"),
        **settings,
    )
