"""The data scaler: N trips with the sample's distributions, fresh unique keys, read by the window SQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from taxi_pipeline.scale import JITTER_MINUTES, read_source, scale_trips, scale_warehouse
from taxi_pipeline.warehouse import connect, export_split, latest_trip_start
from taxi_pipeline.window import Window

TRIPS = 60_000


@pytest.fixture(scope="module")
def source(warehouse):
    return read_source(warehouse)


@pytest.fixture(scope="module")
def scaled(source):
    return scale_trips(source, TRIPS, seed=7)


def big_tipper_rate(frame) -> float:
    return float((frame["tips"] > 0.2 * frame["fare"]).mean())


def test_the_scaled_table_has_n_trips_with_unique_keys_and_keeps_every_source_trip(source, scaled):
    assert len(scaled) == TRIPS
    assert scaled["unique_key"].is_unique
    kept = scaled.iloc[: len(source)].reset_index(drop=True)
    assert kept.equals(source)


def test_the_copies_are_jittered_not_duplicated(source, scaled):
    copies = scaled.iloc[len(source) :]
    # a copy keeps its categories; its numbers and start time move a little
    categories = ["company", "payment_type", "pickup_community_area", "pickup_latitude", "dropoff_longitude"]

    def combos(frame):
        return set(frame[categories].astype(str).itertuples(index=False, name=None))

    assert combos(copies) <= combos(source)
    assert copies["fare"].nunique() > source["fare"].nunique()
    low, high = source["trip_start_timestamp"].min(), source["trip_start_timestamp"].max()
    assert copies["trip_start_timestamp"].between(low, high).all()
    assert (copies["fare"].dropna() >= 0).all() and (copies["trip_seconds"].dropna() >= 0).all()


def test_the_distributions_are_kept(source, scaled):
    for column in ("fare", "trip_miles", "trip_seconds"):
        assert scaled[column].median() == pytest.approx(source[column].median(), rel=0.05), column
        assert scaled[column].isna().mean() == pytest.approx(source[column].isna().mean(), abs=0.01), column
    # fare and tips share one factor: the label's rate is the source's
    assert big_tipper_rate(scaled) == pytest.approx(big_tipper_rate(source), abs=0.01)
    for column in ("company", "payment_type"):
        expected = source[column].value_counts(normalize=True, dropna=False)
        actual = scaled[column].value_counts(normalize=True, dropna=False)
        assert (actual.reindex(expected.index).fillna(0) - expected).abs().max() < 0.01, column

    def hours(frame):
        return frame["trip_start_timestamp"].dt.hour.value_counts(normalize=True).sort_index()

    assert (hours(scaled) - hours(source)).abs().max() < 0.01

    def years(frame):
        return frame["trip_start_timestamp"].dt.year.value_counts(normalize=True).sort_index()

    assert (years(scaled) - years(source)).abs().max() < 0.01
    shift = JITTER_MINUTES * 60
    assert scaled["trip_start_timestamp"].max() == source["trip_start_timestamp"].max(), f"clipped within {shift} s"


def test_it_is_deterministic_for_a_seed(source, scaled):
    assert scale_trips(source, TRIPS, seed=7).equals(scaled)
    assert not scale_trips(source, TRIPS, seed=8)["unique_key"].equals(scaled["unique_key"])


def test_below_the_source_size_it_is_a_subset(source):
    subset = scale_trips(source, 15_000, seed=1)
    assert len(subset) == 15_000 and set(subset["unique_key"]) <= set(source["unique_key"])
    with pytest.raises(ValueError, match="at least 1"):
        scale_trips(source, 0)


def test_a_scaled_warehouse_serves_the_window_sql(warehouse, tmp_path):
    out = tmp_path / "warehouse" / "taxi.duckdb"
    assert scale_warehouse(warehouse, out, 40_000, seed=3) == 40_000
    assert latest_trip_start(out) == latest_trip_start(warehouse)
    window = Window.ending_at(datetime(2016, 1, 1, tzinfo=UTC), 365)
    rows = {split: export_split(out, window, split, str(tmp_path / f"{split}.csv")) for split in ("train", "eval")}
    with connect(warehouse) as con:
        (source_rows,) = con.execute(
            "SELECT count(*) FROM chicago_taxi_trips.taxi_trips WHERE pickup_latitude IS NOT NULL "
            "AND trip_start_timestamp >= TIMESTAMP '2015-01-01' AND trip_start_timestamp < TIMESTAMP '2016-01-01'"
        ).fetchone()
    # the window holds its share of the scaled trips, about a third of them in eval
    total = rows["train"] + rows["eval"]
    assert total == pytest.approx(source_rows * 40_000 / 25_001, rel=0.05)
    assert rows["eval"] / total == pytest.approx(1 / 3, abs=0.02)
