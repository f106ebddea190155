"""Grow the sample warehouse to N trips that keep its distributions (the benchmarks' data).

    python -m taxi_pipeline.scale --trips 1000000 --output /tmp/bench/warehouse/taxi.duckdb \\
        [--source $TAXI_HOME/warehouse/taxi.duckdb] [--seed 0]

The sample has 25k trips; the benchmarks run at 15k, 100k and 1M. The scaled table keeps every
source trip unchanged (or, below the source's size, a random subset of them) and adds resampled
copies of source trips, drawn uniformly with replacement, each with:

- a fresh unique key (sha1 of the seed, the copy's number and the source key), so keys stay unique
  and the hash split of the window SQL still sends about 1/3 of the trips to eval;
- its trip start moved by up to +-JITTER_MINUTES minutes (clipped to the source's time range, so
  the watermark does not move): the hour, day and month distributions are those of the source;
- fare and tips multiplied by one factor (1 + N(0, NUMERIC_JITTER), so the tip share, hence the
  label, is the source trip's), trip_miles and trip_seconds by factors of their own, rounded as
  the source rounds them (cents, 1/100 mile, whole seconds); NULLs stay NULL;
- its categorical fields unchanged: company, payment type, community areas, census tracts and the
  coordinates (the public table's coordinates are tract centroids, a categorical value).

Deterministic for a seed. Written atomically (a staging file renamed into place) in the
warehouse's schema (taxi_pipeline.warehouse.TRIP_COLUMNS).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

from taxi_pipeline.queries import LOCAL_SOURCE_TABLE
from taxi_pipeline.warehouse import TRIP_COLUMNS, connect

JITTER_MINUTES = 30
NUMERIC_JITTER = 0.05
# column -> decimals kept (the source's rounding); fare and tips share one factor.
JITTERED = {"fare": 2, "tips": 2, "trip_miles": 2, "trip_seconds": 0}


def read_source(warehouse: Path):
    """The source warehouse's trips as a pandas DataFrame (TRIP_COLUMNS), in key order."""
    with connect(warehouse) as con:
        return con.execute(f"SELECT {', '.join(TRIP_COLUMNS)} FROM {LOCAL_SOURCE_TABLE} ORDER BY unique_key").df()


def _fresh_keys(seed: int, source_keys, start: int) -> list[str]:
    return [hashlib.sha1(f"scaled:{seed}:{start + i}:{key}".encode()).hexdigest() for i, key in enumerate(source_keys)]


def scale_trips(source, trips: int, seed: int = 0):
    """`trips` rows with the source DataFrame's distributions (see the module docstring)."""
    import numpy as np
    import pandas as pd

    if trips < 1:
        raise ValueError(f"trips must be at least 1, got {trips}")
    if len(source) == 0:
        raise ValueError("the source warehouse has no trips")
    rng = np.random.default_rng(seed)
    if trips <= len(source):
        return source.iloc[np.sort(rng.choice(len(source), trips, replace=False))].reset_index(drop=True)

    extra = trips - len(source)
    copies = source.iloc[rng.integers(0, len(source), extra)].reset_index(drop=True)
    copies["unique_key"] = _fresh_keys(seed, copies["unique_key"], len(source))

    start = copies["trip_start_timestamp"]
    shift = pd.to_timedelta(rng.integers(-JITTER_MINUTES * 60, JITTER_MINUTES * 60 + 1, extra), unit="s")
    low, high = source["trip_start_timestamp"].min(), source["trip_start_timestamp"].max()
    copies["trip_start_timestamp"] = (start + shift).clip(low, high)

    money = 1 + rng.normal(0, NUMERIC_JITTER, extra)
    factors = {
        "fare": money,
        "tips": money,
        "trip_miles": 1 + rng.normal(0, NUMERIC_JITTER, extra),
        "trip_seconds": 1 + rng.normal(0, NUMERIC_JITTER, extra),
    }
    for column, decimals in JITTERED.items():
        values = (copies[column].astype("float64") * np.clip(factors[column], 0.5, 1.5)).round(decimals)
        copies[column] = values.astype(source[column].dtype)  # NaN -> NULL of a nullable integer column
    return pd.concat([source, copies], ignore_index=True)


def write_warehouse(trips, warehouse: Path) -> int:
    """Write a trips DataFrame as a warehouse file (replacing it atomically); returns its row count."""
    import duckdb

    warehouse.parent.mkdir(parents=True, exist_ok=True)
    staging = warehouse.with_name(f"{warehouse.name}.tmp-{os.getpid()}")
    staging.unlink(missing_ok=True)
    con = duckdb.connect(str(staging))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("CREATE SCHEMA chicago_taxi_trips")
        columns = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in TRIP_COLUMNS.items())
        con.register("scaled_trips", trips)
        con.execute(f"CREATE TABLE {LOCAL_SOURCE_TABLE} AS SELECT {columns} FROM scaled_trips")
        (rows,) = con.execute(f"SELECT count(*) FROM {LOCAL_SOURCE_TABLE}").fetchone()
    finally:
        con.close()
    staging.replace(warehouse)
    return rows


def scale_warehouse(source: Path, output: Path, trips: int, seed: int = 0) -> int:
    """A warehouse of `trips` trips at `output`, grown from the warehouse at `source`."""
    return write_warehouse(scale_trips(read_source(source), trips, seed), output)


def main(argv: list[str] | None = None) -> int:
    from taxi_pipeline.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trips", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True, help="the scaled warehouse file")
    parser.add_argument("--source", type=Path, help="source warehouse (default: $TAXI_HOME's, loaded if missing)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    source = args.source
    if source is None:
        from taxi_pipeline.cli import ensure_warehouse

        settings = get_settings()
        ensure_warehouse(settings)
        source = settings.warehouse_path
    rows = scale_warehouse(source, args.output, args.trips, args.seed)
    print(f"Wrote {rows} trips to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
