"""Rolling a served model back: retire newer versions, move labels, record why; idempotent."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from taxi_pipeline.rollback import RollbackError, roll_back
from taxi_pipeline.serving import DeploymentRecord, models_config, push_model, read_labels, served_versions, set_label

VERSIONS = (201501010000, 201502010000, 201503010000)


@pytest.fixture
def serving(tmp_path) -> str:
    """The champion `taxi` with three pushed versions (each a SavedModel dir), `stable` on the newest."""
    root = str(tmp_path / "serving")
    for version in VERSIONS:
        source = tmp_path / "models" / str(version)
        (source / "variables").mkdir(parents=True)
        (source / "saved_model.pb").write_bytes(b"model %d" % version)
        push_model(root, DeploymentRecord("taxi", version, "standard", "taxi_daily_retrain", f"run{version}", "w",
                                          str(source), {"auc": 0.93}, []))
    set_label(root, "taxi", "stable", VERSIONS[-1])
    return root


def test_previous_goes_back_one_blessed_version_and_records_why(serving):
    result = roll_back(serving, "taxi", "previous", "AUC dropped in production (INC-42)", "manual__1")
    assert (result.from_version, result.to_version, result.retired) == (VERSIONS[2], VERSIONS[1], [VERSIONS[2]])
    assert served_versions(f"{serving}/taxi") == list(VERSIONS[:2])
    assert read_labels(serving, "taxi") == {"stable": VERSIONS[1]}
    config = models_config(serving)
    assert f"versions: {VERSIONS[2]}" not in config and f'key: "stable" value: {VERSIONS[1]}' in config
    assert Path(serving, "taxi", ".retired", str(VERSIONS[2]), "saved_model.pb").exists()  # kept, not deleted
    (record,) = json.loads(Path(serving, "taxi", "rollbacks.json").read_text())
    assert record["reason"] == "AUC dropped in production (INC-42)" and record["run_id"] == "manual__1"
    assert (record["from"], record["to"]) == (VERSIONS[2], VERSIONS[1])


def test_a_rerun_changes_nothing_and_a_named_version_can_move_forward_again(serving):
    roll_back(serving, "taxi", str(VERSIONS[0]), "bad data since February", "manual__1")
    again = roll_back(serving, "taxi", str(VERSIONS[0]), "bad data since February", "manual__1")
    assert not again.changed and served_versions(f"{serving}/taxi") == [VERSIONS[0]]
    assert len(json.loads(Path(serving, "taxi", "rollbacks.json").read_text())) == 1
    forward = roll_back(serving, "taxi", str(VERSIONS[1]), "February was fine after all", "manual__2")
    assert forward.restored and served_versions(f"{serving}/taxi") == list(VERSIONS[:2])
    assert read_labels(serving, "taxi") == {"stable": VERSIONS[1]}


@pytest.mark.parametrize("model, target, reason, message", [
    ("taxi", "201401010000", "no such version", "has no version 201401010000"),
    ("taxi_unknown", "previous", "no such model", "is not a served model"),
    ("taxi", "previous", "  ", "needs a reason"),
])
def test_a_bad_request_changes_nothing(serving, model, target, reason, message):
    before = models_config(serving)
    with pytest.raises(RollbackError, match=message):
        roll_back(serving, model, target, reason, "manual__3")
    assert models_config(serving) == before and served_versions(f"{serving}/taxi") == list(VERSIONS)


def test_there_is_no_previous_of_the_first_version(serving):
    roll_back(serving, "taxi", str(VERSIONS[0]), "back to the start", "manual__1")
    with pytest.raises(RollbackError, match="no blessed version older"):
        roll_back(serving, "taxi", "previous", "one more step back", "manual__2")


def test_a_rollback_waits_for_a_deployment_in_progress(serving):
    import threading

    from taxi_pipeline.serving import deploy_lock

    done = threading.Event()
    rollback = threading.Thread(target=lambda: (roll_back(serving, "taxi", "previous", "bad model in prod", "m"),
                                                done.set()))
    with deploy_lock(serving):  # a push holding the serving root
        rollback.start()
        assert not done.wait(1.0)  # the rollback does not interleave with it
        assert served_versions(f"{serving}/taxi") == list(VERSIONS)
    rollback.join(10)
    assert done.is_set() and served_versions(f"{serving}/taxi") == list(VERSIONS[:2])
