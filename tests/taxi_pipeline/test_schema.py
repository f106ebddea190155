"""The schema's versions: inferred once, read and edited by people, pinned by a run's first attempt."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from taxi_pipeline.extract import extract_windows
from taxi_pipeline.layout import RunLayout
from taxi_pipeline.run_context import WindowPlan
from taxi_pipeline.schema import SchemaStore, infer_schema, made, parse
from taxi_pipeline.trip_statistics import dataset_statistics
from taxi_pipeline.validation import keep_schema, pinned_schema, run_schema
from taxi_pipeline.window import Window

WINDOW = Window.ending_at(datetime(2016, 1, 1, tzinfo=UTC), 365)
PLAN = WindowPlan({"": WINDOW, "reference": WINDOW.previous()}, {"": "reference"}, key="")


@pytest.fixture
def layout(warehouse, tmp_path) -> RunLayout:
    layout = RunLayout(str(tmp_path / "artifacts"), "taxi_daily_retrain", WINDOW, "scheduled__1")
    extract_windows(warehouse, layout, PLAN.windows)
    return layout


def test_the_first_run_infers_version_1_a_file_a_person_can_read(layout):
    text = run_schema(layout, PLAN)
    store = SchemaStore(layout.schema_dir, layout.dag_id)
    assert store.versions() == []  # stored only once the run's windows passed
    keep_schema(layout, text)
    assert store.versions() == [1] and Path(store.path(1)).read_text() == text
    assert text.startswith("# The schema of the trips taxi_daily_retrain trains on: version 1.")
    assert "accept_data_changes" in text.splitlines()[3]
    schema = parse(text)
    assert schema["made"]["how"] == "inferred" and schema["made"]["run"] == "scheduled__1"
    assert set(schema["made"]["windows"]) == {"window", "reference"}
    payment = schema["features"]["payment_type"]
    assert {"Cash", "Credit Card"} <= set(payment["domain"])
    assert payment["distribution_constraints"] == {"min_domain_mass": 0.99}
    assert payment["drift_comparator"] == {"infinity_norm": {"threshold": 0.15}}
    fare = schema["features"]["fare"]
    assert fare["float_domain"]["min"] == 0 and fare["drift_comparator"] == {
        "jensen_shannon_divergence": {"threshold": 0.05}
    }
    assert "float_domain" not in schema["features"]["trip_start_timestamp"]  # a calendar position has no range
    assert schema["label"]["drift_comparator"] == {"max_base_rate_change": 0.1}


def test_a_persons_edit_as_the_next_version_is_what_the_next_run_uses(layout):
    store = SchemaStore(layout.schema_dir, layout.dag_id)
    first = run_schema(layout, PLAN)
    keep_schema(layout, first)
    edited = first.replace("version: 1", "version: 2").replace("min_domain_mass: 0.9\n", "min_domain_mass: 0.8\n")
    Path(store.path(2)).write_text(edited)
    later = RunLayout(layout.artifact_root, layout.dag_id, WINDOW, "scheduled__2")
    assert run_schema(later, PLAN) == edited
    assert parse(edited)["features"]["company"]["distribution_constraints"]["min_domain_mass"] == 0.8


def test_a_backfills_first_windows_that_infer_at_once_all_keep_what_they_validated(layout, monkeypatch):
    """Two runs infer version 1 from different windows; the other stores its own just before this
    one writes (a backfill's first windows run at once): this run keeps its schema in its
    validation folder and passes. An accepted change in the way of another is refused."""
    first = run_schema(layout, PLAN)
    other = first.replace("min_domain_mass: 0.9\n", "min_domain_mass: 0.85\n")
    assert other != first
    write = SchemaStore.write

    def another_run_first(store, text):
        if not store.versions():
            write(store, other)
        return write(store, text)

    monkeypatch.setattr(SchemaStore, "write", another_run_first)
    keep_schema(layout, first)
    store = SchemaStore(layout.schema_dir, layout.dag_id)
    assert store.versions() == [1] and store.current() == other
    keep_schema(layout, other)  # the same text again: nothing to do
    with pytest.raises(FileExistsError):
        keep_schema(layout, first.replace("how: inferred", "how: accepted"))


def test_a_retry_validates_against_the_schema_its_first_attempt_used(layout):
    first = run_schema(layout, PLAN)
    keep_schema(layout, first)
    Path(layout.validation_dir()).mkdir(parents=True)
    Path(layout.validation_dir(), "schema.yaml").write_text(first)
    store = SchemaStore(layout.schema_dir, layout.dag_id)
    store.write(store.next_text(parse(first) | {"made": {"how": "edited"}}))  # version 2 since
    assert store.versions() == [1, 2]
    assert pinned_schema(layout, "") == first


def test_a_version_is_written_once_and_its_file_and_number_agree(layout):
    store = SchemaStore(layout.schema_dir, layout.dag_id)
    first = run_schema(layout, PLAN)
    store.write(first)
    with pytest.raises(FileExistsError, match="schema version 1 was written meanwhile by another run"):
        store.write(first)
    Path(store.path(2)).write_text(first)  # copied to the next number, its version: line left at 1
    with pytest.raises(ValueError, match="says version: 1.*set version: 2"):
        store.current()


def test_no_schema_is_learned_from_no_trips():
    import pandas as pd

    empty = dataset_statistics(pd.DataFrame())
    with pytest.raises(ValueError, match="cannot infer a schema: no trips"):
        infer_schema([empty], made("inferred"))


def test_a_set_without_trips_is_passed_over(layout):
    """The first run of the earliest data: its reference window is empty."""
    from taxi_pipeline.files import read_split

    empty = dataset_statistics(pd_empty := read_split(layout.split_dir("train", "reference")).iloc[:0])
    assert empty["num_examples"] == 0 and len(pd_empty.columns)
    window = dataset_statistics(read_split(layout.split_dir("train")))
    schema = infer_schema([empty, window], made("inferred"))
    assert len(schema["features"]) == 19 and schema["features"]["payment_type"]["domain"]


def test_a_file_that_is_not_a_schema_is_refused():
    with pytest.raises(ValueError, match="no features mapping"):
        parse("version: 3\n")
    with pytest.raises(ValueError, match="fare needs a type and presence.min_fraction"):
        parse("label: {name: big_tipper}\nfeatures:\n  fare: {type: float}\n")
