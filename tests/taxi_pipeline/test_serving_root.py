"""The serving root (taxi_pipeline.serving_root) on a local folder: versions, atomic idempotent pushes,
the old-window guard, labels."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taxi_pipeline.serving_root import DeploymentRecord, ServingRoot, version_for


def saved_model(root: Path, marker: str) -> Path:
    """A directory in SavedModel layout (these tests move directories; they load nothing)."""
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_text(marker)
    (root / "variables" / "variables.index").write_text(marker)
    return root


def record(source: Path, end: datetime, model: str = "taxi_standard") -> DeploymentRecord:
    return DeploymentRecord(
        model=model,
        version=version_for(end),
        variant="standard",
        dag_id="taxi_daily_retrain",
        run_id=f"scheduled__{end.isoformat()}",
        window=f"[..., {end.isoformat()})",
        source=str(source),
        metrics={"auc": 0.93},
        reasons=["auc 0.93 >= floor 0.88"],
    )


JAN, FEB = datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 2, 1, tzinfo=UTC)


def test_the_version_is_the_data_interval_end():
    assert version_for(JAN) == 201601010000 < version_for(FEB)


def test_a_push_is_complete_recorded_and_idempotent(tmp_path):
    root = tmp_path / "serving"
    first = ServingRoot(str(root)).push(record(saved_model(tmp_path / "m1", "first"), JAN))
    assert first.pushed and first.version == 201601010000
    base = root / "taxi_standard"
    assert (base / "201601010000" / "saved_model.pb").read_text() == "first"
    assert (
        json.loads((base / "records" / "201601010000.json").read_text())["run_id"]
        == "scheduled__2016-01-01T00:00:00+00:00"
    )

    again = ServingRoot(str(root)).push(record(saved_model(tmp_path / "m2", "retry"), JAN))  # a retry of the window
    assert again.pushed
    assert ServingRoot(str(root)).versions("taxi_standard") == [201601010000]
    assert (base / "201601010000" / "saved_model.pb").read_text() == "retry"
    assert sorted(p.name for p in base.iterdir()) == ["201601010000", "records"]  # no staging leftovers


def test_an_older_window_never_replaces_a_newer_served_model(tmp_path):
    root = tmp_path / "serving"
    ServingRoot(str(root)).push(record(saved_model(tmp_path / "feb", "feb"), FEB))
    old = ServingRoot(str(root)).push(record(saved_model(tmp_path / "jan", "jan"), JAN))
    assert not old.pushed
    assert "version 201602010000 of a newer window is already served" in old.message
    assert ServingRoot(str(root)).versions("taxi_standard") == [201602010000]


def test_another_dags_version_is_never_replaced(tmp_path):
    from dataclasses import replace

    root = tmp_path / "serving"
    ServingRoot(str(root)).push(record(saved_model(tmp_path / "daily", "daily"), JAN, model="taxi"))
    other = replace(
        record(saved_model(tmp_path / "sliding", "sliding"), JAN, model="taxi"), dag_id="taxi_sliding_window"
    )
    refused = ServingRoot(str(root)).push(other)
    assert not refused.pushed
    assert "is served from taxi_daily_retrain's run scheduled__2016-01-01T00:00:00+00:00" in refused.message
    assert (root / "taxi" / "201601010000" / "saved_model.pb").read_text() == "daily"


def test_labels_and_the_tf_serving_model_config(tmp_path):
    root = tmp_path / "serving"
    for end, marker in ((JAN, "jan"), (FEB, "feb")):
        ServingRoot(str(root)).push(record(saved_model(tmp_path / marker, marker), end, model="taxi"))
    ServingRoot(str(root)).set_label("taxi", "stable", version_for(JAN))
    assert ServingRoot(str(root)).labels("taxi") == {"stable": 201601010000}
    config = (root / "models.config").read_text()
    assert config == ServingRoot(str(root)).models_config()
    assert 'name: "taxi"' in config and 'model_platform: "tensorflow"' in config
    assert "specific { versions: 201601010000 versions: 201602010000 }" in config  # newest and labelled stay loaded
    assert 'version_labels { key: "stable" value: 201601010000 }' in config
    with pytest.raises(ValueError, match="no version 1"):
        ServingRoot(str(root)).set_label("taxi", "stable", 1)


def test_push_and_label_labels_only_a_pushed_version(tmp_path):
    root = tmp_path / "serving"
    feb = ServingRoot(str(root)).push_and_label(
        record(saved_model(tmp_path / "feb", "feb"), FEB, model="taxi"), "stable"
    )
    jan = ServingRoot(str(root)).push_and_label(
        record(saved_model(tmp_path / "jan", "jan"), JAN, model="taxi"), "stable"
    )
    assert feb.pushed and not jan.pushed
    assert ServingRoot(str(root)).labels("taxi") == {"stable": 201602010000}  # the refused older window moved nothing
