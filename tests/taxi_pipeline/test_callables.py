"""validate_window as the DAGs run it: the schema inferred by the first run, a window that fails on
a change of the data, and the manual run that accepts it (the accept_data_changes Param)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from taxi_pipeline.callables import validate_window_artifacts
from taxi_pipeline.extract import extract_windows
from taxi_pipeline.files import read_split
from taxi_pipeline.run_context import run_layout, window_plan
from taxi_pipeline.schema import SchemaStore, parse


class _Dag:
    dag_id = "taxi_daily_retrain"


def context(run_id: str, **params) -> dict:
    return {
        "params": {"window_days": 365, "min_window_rows": 500, **params},
        "dag": _Dag(),
        "run_id": run_id,
        "data_interval_start": datetime(2015, 12, 31, tzinfo=UTC),
        "data_interval_end": datetime(2016, 1, 1, tzinfo=UTC),
    }


def extract(warehouse, ctx, new_payment_type: bool = False):
    layout = run_layout(ctx)
    extract_windows(warehouse, layout, window_plan(ctx).windows)
    if new_payment_type:  # an eighth of the window's trips paid by phone, a type the schema has not seen
        for split in ("train", "eval"):
            path = Path(layout.split_dir(split), "part-00000.csv")
            frame = read_split(str(path.parent))
            frame.loc[frame.index % 8 == 0, "payment_type"] = "Mobile"
            frame.to_csv(path, index=False)
    return layout


@pytest.mark.slow  # three real validations
def test_a_change_fails_the_scheduled_run_and_a_manual_run_accepts_it(warehouse, tmp_path):
    with mock.patch.dict(os.environ, TAXI_HOME=str(tmp_path)):
        first = context("scheduled__2016-01-01")
        layout = extract(warehouse, first)
        assert validate_window_artifacts(**first)["window"]["schema_version"] == 1
        store = SchemaStore(layout.schema_dir, layout.dag_id)
        assert store.versions() == [1]

        changed = context("scheduled__2016-01-02")
        layout = extract(warehouse, changed, new_payment_type=True)
        with pytest.raises(AirflowFailException, match="payment_type: 12.5% of values outside the schema's domain"):
            validate_window_artifacts(**changed)
        assert "FAILED" in Path(layout.validation_dir(), "summary.txt").read_text()
        assert store.versions() == [1]

        reason = "payment by phone since the app launched"
        accepted = context("scheduled__2016-01-02", accept_data_changes=reason)  # the same run, by hand
        assert validate_window_artifacts(**accepted)["window"]["schema_version"] == 2
        assert store.versions() == [1, 2]
        schema = parse(Path(store.path(2)).read_text())
        assert "Mobile" in schema["features"]["payment_type"]["domain"] and schema["made"]["reason"] == reason
        assert Path(layout.validation_dir(), "schema.yaml").read_text() == Path(store.path(2)).read_text()
        assert "PASSED" in Path(layout.validation_dir(), "summary.txt").read_text()

        # a retry of that run, without the Param, keeps its verdict: the schema it used is pinned
        assert validate_window_artifacts(**changed)["window"]["schema_version"] == 2
        assert store.versions() == [1, 2]


@pytest.mark.slow  # concurrent real validations
def test_two_accepts_at_once_do_not_lose_one_anothers_change(warehouse, tmp_path):
    """Two manual runs accept changes from version 1; the second to finish must not write a version
    that drops the first one's: it is refused, and a new run builds on the first one's version."""
    with mock.patch.dict(os.environ, TAXI_HOME=str(tmp_path)):
        first = context("scheduled__2016-01-01")
        extract(warehouse, first)
        validate_window_artifacts(**first)
        store = SchemaStore(run_layout(first).schema_dir, "taxi_daily_retrain")

        one, two = (context(f"manual__{n}", accept_data_changes=f"change {n}") for n in (1, 2))
        for ctx in (one, two):
            extract(warehouse, ctx, new_payment_type=True)
        from taxi_pipeline.validation import accept_changes, pinned_schema, validate_run  # noqa: F401

        validate_window_artifacts(**one)
        assert store.versions() == [1, 2]
        # the second run validated against version 1 and accepted its own version 2 before the first kept
        # its own: simulated by pinning version 1 for it
        layout = run_layout(two)
        Path(layout.validation_dir()).mkdir(parents=True)
        Path(layout.validation_dir(), "schema.yaml").write_text(Path(store.path(1)).read_text())
        assert validate_window_artifacts(**two)["window"]["schema_version"] == 3  # built on version 2
        assert parse(Path(store.path(3)).read_text())["made"]["previous"] == 2
