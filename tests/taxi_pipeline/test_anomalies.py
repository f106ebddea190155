"""The schema learned from the sample's first year, against every real window after it: none is
anomalous (statistics and anomalies only; the fixed expectations are tested in test_validation)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from taxi_pipeline.anomalies import validate_statistics
from taxi_pipeline.extract import extract_windows
from taxi_pipeline.files import read_split
from taxi_pipeline.layout import SPLITS, RunLayout
from taxi_pipeline.schema import infer_schema, made
from taxi_pipeline.trip_statistics import dataset_statistics, generate_statistics
from taxi_pipeline.window import Window

UTC = UTC
FIRST_YEAR = Window(datetime(2013, 1, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC))
# The daily DAG's 365-day windows, a quarter apart, and the sliding-window DAG's months, 2014-2016.
DAILY = [Window.ending_at(datetime(y, m, 1, tzinfo=UTC), 365) for y in (2014, 2015, 2016) for m in (1, 4, 7, 10)]
DAILY.append(Window.ending_at(datetime(2017, 1, 1, tzinfo=UTC), 365))
MONTHLY = [
    Window(datetime(y, m, 1, tzinfo=UTC), datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC))
    for y in (2014, 2015, 2016)
    for m in range(1, 13)
]


@pytest.fixture(scope="module")
def window_statistics(warehouse, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("windows"))
    cache = {}

    def statistics(window: Window) -> dict:
        if window not in cache:
            layout = RunLayout(root, "real", window, "run")
            extract_windows(warehouse, layout, {"": window})
            cache[window] = generate_statistics({s: read_split(layout.split_dir(s)) for s in SPLITS})
        return cache[window]

    return statistics


@pytest.fixture(scope="module")
def first_year_schema(window_statistics) -> dict:
    return infer_schema([window_statistics(FIRST_YEAR)["splits"]["train"]], made("inferred", windows=str(FIRST_YEAR)))


@pytest.mark.parametrize("window", DAILY, ids=lambda w: f"daily-{w.end:%Y-%m}")
def test_every_daily_window_passes_against_the_previous_one(window, window_statistics, first_year_schema):
    reference = window_statistics(window.previous())["splits"]["train"]
    findings = validate_statistics(window_statistics(window), first_year_schema, reference)
    assert [a.line for a in findings.anomalies] == []


@pytest.mark.slow  # validates every month of the sample
def test_every_month_passes_against_the_90_days_before_it(window_statistics, first_year_schema):
    anomalies = []
    for month in MONTHLY:
        reference = window_statistics(Window.ending_at(month.start, 90))["splits"]["train"]
        findings = validate_statistics(window_statistics(month), first_year_schema, reference)
        anomalies += [f"{month}: {a.line}" for a in findings.anomalies]
    assert anomalies == []


def test_statistics_count_what_the_window_holds(window_statistics):
    stats = window_statistics(DAILY[4])
    whole, train, evaluation = stats["all"], stats["splits"]["train"], stats["splits"]["eval"]
    assert whole["num_examples"] == train["num_examples"] + evaluation["num_examples"]
    company = whole["features"]["company"]
    assert company["count"] + company["nulls"] == whole["num_examples"]
    assert sum(company["frequencies"].values()) + company["other_rows"] == company["count"]
    assert 0.15 < whole["label"]["base_rate"] < 0.4
    assert sum(rows for rows, _ in whole["label"]["by_month"].values()) == whole["num_examples"]
    fare = whole["features"]["fare"]
    assert fare["min"] == fare["quantiles"][0] and fare["max"] == fare["quantiles"][-1]


def test_one_set_of_trips_is_compared_with_another_the_same_way(window_statistics, first_year_schema):
    """What the serving monitor needs: any two sets of trips, no window around them."""
    import pandas as pd

    from taxi_pipeline.anomalies import compare

    stats = window_statistics(DAILY[4])
    served = pd.DataFrame({"payment_type": ["Mobile"] * 600 + ["Cash"] * 400})
    findings = compare(
        dataset_statistics(served),
        stats["splits"]["train"],
        first_year_schema,
        "skew_comparator",
        "against the training window",
    )
    (line,) = [a.line for a in findings.anomalies if a.column == "payment_type"]
    assert line.startswith("payment_type: skew against the training window (L-infinity distance")
    assert "'Mobile' 0.0% -> 60.0% of rows" in line


def _numeric(values) -> dict:
    import pandas as pd

    return dataset_statistics(pd.DataFrame({"fare": values}))["features"]["fare"]


def test_jensen_shannon_is_zero_for_the_same_distribution_and_one_for_disjoint_ones():
    import numpy as np

    from taxi_pipeline.anomalies import js_divergence

    rng = np.random.default_rng(7)
    same = js_divergence(_numeric(rng.normal(10, 2, 5000)), _numeric(rng.normal(10, 2, 5000)))
    shifted = js_divergence(_numeric(rng.normal(12, 2, 5000)), _numeric(rng.normal(10, 2, 5000)))
    apart = js_divergence(_numeric(rng.normal(100, 1, 5000)), _numeric(rng.normal(10, 1, 5000)))
    assert same < 0.005 < shifted < apart
    assert apart == pytest.approx(1.0, abs=0.01)


def test_the_l_infinity_distance_is_the_largest_move_of_a_values_share():
    import pandas as pd

    from taxi_pipeline.anomalies import share_moves

    before = dataset_statistics(pd.DataFrame({"company": ["A"] * 50 + ["B"] * 50}))["features"]["company"]
    after = dataset_statistics(pd.DataFrame({"company": ["A"] * 20 + ["B"] * 50 + ["C"] * 30}))["features"]["company"]
    assert share_moves(after, before)[0] == (pytest.approx(0.3), "A")
    assert dict((v, d) for d, v in share_moves(after, before)) == {
        "A": pytest.approx(0.3),
        "C": pytest.approx(0.3),
        "B": 0.0,
    }


def test_infinite_numbers_are_counted_as_invalid_not_measured():
    import pandas as pd

    fare = dataset_statistics(pd.DataFrame({"fare": ["7.25", "inf", "1e400", "n/a", None]}))["features"]["fare"]
    assert fare["text_values"] == 3 and fare["count"] == 4 and fare["nulls"] == 1
    assert fare["max"] == 7.25 and all(q == 7.25 for q in fare["quantiles"])


def test_a_column_the_served_trips_lack_and_more_nulls_are_skew(window_statistics, first_year_schema):
    import pandas as pd

    from taxi_pipeline.anomalies import compare

    training = window_statistics(DAILY[4])["splits"]["train"]
    served = pd.DataFrame({"fare": [7.25] * 2000, "company": [None] * 2000})
    lines = [
        a.line
        for a in compare(
            dataset_statistics(served), training, first_year_schema, "skew_comparator", "against the training window"
        ).anomalies
    ]
    assert "payment_type: column missing against the training window" in lines
    assert any(
        line.startswith("company: null share") and "-> 100.0% against the training window" in line for line in lines
    ), lines
