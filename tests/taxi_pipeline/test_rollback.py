"""Rolling a served model back: retire newer versions, move labels, record why; idempotent. The same
code on both platforms' serving roots: a local folder and `gs://` (the GCS emulator)."""

from __future__ import annotations

import pytest

from taxi_pipeline import files
from taxi_pipeline.serving_root import DeploymentRecord, RollbackError, ServingRoot

VERSIONS = (201501010000, 201502010000, 201503010000)


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path) -> ServingRoot:
    """The champion `taxi` with three pushed versions (each a SavedModel dir), `stable` on the newest."""
    if request.param == "gcs":
        from gcs_emulator import ROOT

        request.getfixturevalue("emulator").wipe(keep_buckets=True)
        root = ServingRoot(f"{ROOT}/serving")
    else:
        root = ServingRoot(str(tmp_path / "serving"))
    for version in VERSIONS:
        source = tmp_path / "models" / str(version)
        (source / "variables").mkdir(parents=True)
        (source / "saved_model.pb").write_bytes(b"model %d" % version)
        root.push(
            DeploymentRecord(
                "taxi", version, "standard", "taxi_daily_retrain", f"run{version}", "w", str(source), {"auc": 0.93}, []
            )
        )
    root.set_label("taxi", "stable", VERSIONS[-1])
    return root


def test_previous_goes_back_one_blessed_version_and_records_why(root):
    result = root.roll_back("taxi", "previous", "AUC dropped in production (INC-42)", "manual__1")
    assert (result.from_version, result.to_version, result.retired) == (VERSIONS[2], VERSIONS[1], [VERSIONS[2]])
    assert root.versions("taxi") == list(VERSIONS[:2])
    assert root.labels("taxi") == {"stable": VERSIONS[1]}
    config = files.read_text(f"{root.uri}/models.config")
    assert config == root.models_config()
    assert f"versions: {VERSIONS[2]}" not in config and f'key: "stable" value: {VERSIONS[1]}' in config
    assert root.retired_versions("taxi") == [VERSIONS[2]]  # kept, not deleted
    assert files.exists(f"{root.uri}/taxi/.retired/{VERSIONS[2]}/saved_model.pb")
    (record,) = root.rollbacks("taxi")
    assert record["reason"] == "AUC dropped in production (INC-42)" and record["run_id"] == "manual__1"
    assert (record["from"], record["to"]) == (VERSIONS[2], VERSIONS[1])


def test_a_rerun_changes_nothing_and_a_named_version_can_move_forward_again(root):
    root.roll_back("taxi", str(VERSIONS[0]), "bad data since February", "manual__1")
    again = root.roll_back("taxi", str(VERSIONS[0]), "bad data since February", "manual__1")
    assert not again.changed and root.versions("taxi") == [VERSIONS[0]]
    assert len(root.rollbacks("taxi")) == 1
    forward = root.roll_back("taxi", str(VERSIONS[1]), "February was fine after all", "manual__2")
    assert forward.restored and root.versions("taxi") == list(VERSIONS[:2])
    assert root.labels("taxi") == {"stable": VERSIONS[1]}
    assert files.read_bytes(f"{root.uri}/taxi/{VERSIONS[1]}/saved_model.pb") == b"model %d" % VERSIONS[1]


@pytest.mark.parametrize(
    "model, target, reason, message",
    [
        ("taxi", "201401010000", "no such version", "has no version 201401010000"),
        ("taxi_unknown", "previous", "no such model", "is not a served model"),
        ("taxi", "previous", "  ", "needs a reason"),
    ],
)
def test_a_bad_request_changes_nothing(root, model, target, reason, message):
    before = root.models_config()
    with pytest.raises(RollbackError, match=message):
        root.roll_back(model, target, reason, "manual__3")
    assert root.models_config() == before and root.versions("taxi") == list(VERSIONS)


def test_there_is_no_previous_of_the_first_version(root):
    root.roll_back("taxi", str(VERSIONS[0]), "back to the start", "manual__1")
    with pytest.raises(RollbackError, match="no blessed version older"):
        root.roll_back("taxi", "previous", "one more step back", "manual__2")


def test_a_rollback_waits_for_a_deployment_in_progress(root):
    import threading

    done = threading.Event()
    rollback = threading.Thread(
        target=lambda: (root.roll_back("taxi", "previous", "bad model in prod", "m"), done.set())
    )
    with root.lock():  # a push holding the serving root
        rollback.start()
        assert not done.wait(1.5)  # the rollback does not interleave with it
        assert root.versions("taxi") == list(VERSIONS)
    rollback.join(10)
    assert done.is_set() and root.versions("taxi") == list(VERSIONS[:2])
