"""The one file API (taxi_pipeline.files), the GCS lock (gcs_lock) and the serving root on `gs://`,
for real against a local GCS emulator (gcp-storage-emulator, in this process on a free loopback
port, with GCS's preconditions: tests/gcs_emulator.py). The file API is Airflow's ObjectStoragePath
(gcsfs) on a connection with anonymous credentials; STORAGE_EMULATOR_HOST points gcsfs and
google-cloud-storage at the emulator. The order of writes is read from the objects' generations
(the emulator's are nanosecond clocks, like GCS's microsecond ones)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from gcs_emulator import BUCKET, ROOT
from taxi_pipeline import files, gcs_lock
from taxi_pipeline.serving_root import DeploymentRecord, ServingRoot


@pytest.fixture
def store(emulator):
    """An empty bucket for each test; returns a storage client to look at the objects' generations."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    emulator.wipe(keep_buckets=True)
    return GCSHook(gcp_conn_id="google_cloud_default").get_conn()


def _generations(store, prefix: str) -> dict[str, int]:
    return {b.name[len(prefix) :]: int(b.generation) for b in store.list_blobs(BUCKET, prefix=prefix)}


def _saved_model(path: Path, marker: str) -> Path:
    """A SavedModel's file layout (the bytes are not TensorFlow's: this is about where they go)."""
    for name in (
        "saved_model.pb",
        "fingerprint.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
        "assets/vocab_company.txt",
    ):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(f"{marker}:{name}")
    return path


def test_the_client_is_the_providers_hook_on_the_emulator(store):
    assert store._connection.API_BASE_URL == os.environ["STORAGE_EMULATOR_HOST"]
    files.write_text(f"{ROOT}/a/b.txt", "one")
    assert files.exists(f"{ROOT}/a/b.txt") and not files.exists(f"{ROOT}/a/c.txt")
    assert files.read_text(f"{ROOT}/a/b.txt") == "one"
    files.write_text(f"{ROOT}/a/b.txt", "two")  # a rewrite replaces the whole object
    assert files.read_text(f"{ROOT}/a/b.txt") == "two"


def test_listing_names_children_and_globs(store):
    for name in (
        "serving/taxi/202601010000/saved_model.pb",
        "serving/taxi/labels.json",
        "serving/taxi_wide/202601010000/saved_model.pb",
        "serving/models.config",
        "serving-other/x",
        "data/train/part-000000000000.csv",
        "data/train/part-000000000001.csv",
        "data/eval/part-000000000000.csv",
    ):
        files.write_text(f"{ROOT}/{name}", name)
    # the "subdirectories" (the listing's prefixes, known once its pages are read) and the objects
    assert files.children(f"{ROOT}/serving") == ["models.config", "taxi", "taxi_wide"]
    assert files.children(f"{ROOT}/serving/") == ["models.config", "taxi", "taxi_wide"]
    assert files.children(f"{ROOT}/nothing") == []
    assert files.list_files(f"{ROOT}/serving/taxi") == ["202601010000/saved_model.pb", "labels.json"]
    assert files.glob(f"{ROOT}/data/train/part-*.csv") == [
        f"{ROOT}/data/train/part-000000000000.csv",
        f"{ROOT}/data/train/part-000000000001.csv",
    ]
    assert files.glob(f"{ROOT}/data/*/part-*.csv") == [
        f"{ROOT}/data/eval/part-000000000000.csv",
        *files.glob(f"{ROOT}/data/train/part-*.csv"),
    ]


def test_upload_tree_drops_an_earlier_trys_objects_and_writes_last_names_last(store, tmp_path):
    target = f"{ROOT}/artifacts/d/window=w/run=r/variants/standard/model"
    first = _saved_model(tmp_path / "first", "first")
    (first / "variables" / "stale.tmp").write_text("from the first try only")
    files.copy_tree(str(first), target, last=("saved_model.pb",))
    second = _saved_model(tmp_path / "second", "second")
    written = files.copy_tree(str(second), target, last=("saved_model.pb",))

    assert sorted(written) == files.list_files(target)
    assert "variables/stale.tmp" not in files.list_files(target)
    assert files.read_text(f"{target}/variables/variables.index") == "second:variables/variables.index"
    generations = _generations(store, split_prefix(target))
    assert generations["saved_model.pb"] > max(g for n, g in generations.items() if n != "saved_model.pb")

    local = tmp_path / "back"
    assert files.copy_tree(target, str(local)) == sorted(written)  # and back, from GCS to a local folder
    assert all((local / n).read_text() == (second / n).read_text() for n in written)
    with pytest.raises(FileNotFoundError, match="nothing to copy"):
        files.copy_tree(f"{ROOT}/missing", str(tmp_path / "none"))


def split_prefix(uri: str) -> str:
    return uri.removeprefix(f"{ROOT}/").rstrip("/") + "/"


def _record(source: str, version: int, model: str = "taxi_standard"):
    return DeploymentRecord(
        model=model,
        version=version,
        variant="standard",
        dag_id="taxi_daily_retrain",
        run_id=f"scheduled__{version}",
        window=f"w{version}",
        source=source,
        metrics={"auc": 0.8},
        reasons=[],
    )


@pytest.fixture
def exported(store, tmp_path):
    """Two runs' exported SavedModels in the artifact bucket."""
    sources = {}
    for run in ("old", "new"):
        sources[run] = f"{ROOT}/artifacts/taxi_daily_retrain/run={run}/variants/standard/model"
        files.copy_tree(str(_saved_model(tmp_path / run, run)), sources[run], last=("saved_model.pb",))
    return sources


def test_push_copies_the_version_saved_model_last_then_the_record_then_models_config(store, exported):
    serving = f"{ROOT}/serving"
    result = ServingRoot(serving).push(_record(exported["new"], 201601010000))
    assert result.pushed and result.version == 201601010000

    version = f"{serving}/taxi_standard/201601010000"
    assert files.list_files(version) == files.list_files(exported["new"])
    assert files.read_text(f"{version}/saved_model.pb") == "new:saved_model.pb"
    assert ServingRoot(serving).versions("taxi_standard") == [201601010000]
    record = json.loads(files.read_text(f"{serving}/taxi_standard/records/201601010000.json"))
    assert record["source"] == exported["new"] and record["version"] == 201601010000

    generations = _generations(store, "serving/")
    version_files = {n: g for n, g in generations.items() if n.startswith("taxi_standard/201601010000/")}
    pb = version_files.pop("taxi_standard/201601010000/saved_model.pb")
    assert pb > max(version_files.values())
    assert pb < generations["taxi_standard/records/201601010000.json"] < generations["models.config"]

    config = files.read_text(f"{serving}/models.config")
    assert 'name: "taxi_standard"' in config and f'base_path: "{serving}/taxi_standard"' in config
    assert "versions: 201601010000" in config


def test_an_older_window_never_replaces_a_newer_version(store, exported):
    serving = f"{ROOT}/serving"
    assert ServingRoot(serving).push(_record(exported["new"], 201601010000)).pushed
    config = files.read_text(f"{serving}/models.config")
    before = _generations(store, "serving/")

    result = ServingRoot(serving).push(_record(exported["old"], 201512310000))
    assert not result.pushed and "201601010000" in result.message and "newer window" in result.message
    assert _generations(store, "serving/") == before  # not one object written
    assert ServingRoot(serving).versions("taxi_standard") == [201601010000]
    assert files.read_text(f"{serving}/models.config") == config


def test_a_retried_push_is_idempotent_and_a_half_copied_version_is_not_served(store, exported):
    serving = f"{ROOT}/serving"
    base = f"{serving}/taxi_standard"
    # an earlier try died after copying part of the version, before saved_model.pb and models.config
    files.write_text(f"{base}/201601010000/variables/variables.index", "partial")
    files.write_text(f"{base}/201601010000/leftover.tmp", "partial")
    assert ServingRoot(serving).versions("taxi_standard") == []
    assert "taxi_standard" not in ServingRoot(serving).models_config()

    record = _record(exported["new"], 201601010000)
    assert ServingRoot(serving).push(record).pushed
    names, config = files.list_files(serving), files.read_text(f"{serving}/models.config")
    assert "taxi_standard/201601010000/leftover.tmp" not in names
    assert files.read_text(f"{base}/201601010000/variables/variables.index") == "new:variables/variables.index"

    assert ServingRoot(serving).push(record).pushed  # the retry: same objects, same config
    assert files.list_files(serving) == names and files.read_text(f"{serving}/models.config") == config

    # a later window adds a version; the stable label keeps the earlier one configured
    ServingRoot(serving).set_label("taxi_standard", "stable", 201601010000)
    assert ServingRoot(serving).push(replace(record, version=201601020000, source=exported["old"])).pushed
    config = files.read_text(f"{serving}/models.config")
    assert "versions: 201601010000 versions: 201601020000" in config
    assert 'version_labels { key: "stable" value: 201601010000 }' in config
    with pytest.raises(ValueError, match="no version 1"):
        ServingRoot(serving).set_label("taxi_standard", "stable", 1)


def test_a_push_from_nothing_fails_clearly_and_writes_nothing(store):
    with pytest.raises(FileNotFoundError, match="nothing to copy"):
        ServingRoot(f"{ROOT}/serving").push(_record(f"{ROOT}/artifacts/missing/model", 201601010000))
    assert files.list_files(f"{ROOT}/serving") == []


def test_a_gcp_task_publishes_its_output_folder_whole_and_only_when_it_succeeds(store, monkeypatch):
    from taxi_pipeline.run_context import run_layout

    monkeypatch.setenv("TAXI_PLATFORM", "gcp")
    end = datetime(2016, 1, 1, tzinfo=UTC)
    context = {
        "dag": SimpleNamespace(dag_id="taxi_daily_retrain"),
        "run_id": "scheduled__2016-01-01T00:00:00+00:00",
        "data_interval_start": datetime(2015, 12, 31, tzinfo=UTC),
        "data_interval_end": end,
        "logical_date": datetime(2015, 12, 31, tzinfo=UTC),
        "params": {"window_days": 365},
    }
    layout = run_layout(context)
    assert layout.run_dir.startswith(f"{ROOT}/artifacts/taxi_daily_retrain/window=")
    files.write_text(f"{layout.run_dir}/data/train/part-0.csv", "a,b\n1,2\n")
    assert files.read_split(f"{layout.run_dir}/data/train").to_dict("records") == [{"a": 1, "b": 2}]
    files.write_text(f"{layout.validation_dir()}/stale.txt", "an earlier try's report")

    with pytest.raises(RuntimeError, match="crashed"):
        with files.atomic_directory(layout.validation_dir()) as staging:
            (staging / "summary.txt").write_text("half a report")
            raise RuntimeError("crashed")  # a crashed try publishes nothing
    assert files.list_files(layout.validation_dir()) == ["stale.txt"]
    with files.atomic_directory(layout.validation_dir()) as staging:
        (staging / "summary.txt").write_text("1 problem")
    assert files.list_files(layout.validation_dir()) == ["summary.txt"]  # the earlier try's objects are gone
    files.write_text(f"{layout.run_dir}/comparison.txt", "table")
    assert files.read_text(f"{layout.run_dir}/comparison.txt") == "table"


def test_the_emulator_keeps_gcs_preconditions(store):
    """What the lock relies on (tests/gcs_emulator.py adds it to the emulator): ifGenerationMatch=0
    creates only an absent object, a delete of another generation changes nothing."""
    from google.api_core.exceptions import PreconditionFailed

    blob = store.bucket(BUCKET).blob("lock")
    blob.upload_from_string("first", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        store.bucket(BUCKET).blob("lock").upload_from_string("second", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        blob.delete(if_generation_match=int(blob.generation) + 1)
    assert store.bucket(BUCKET).blob("lock").download_as_text() == "first"
    blob.delete(if_generation_match=blob.generation)
    assert not store.bucket(BUCKET).blob("lock").exists()


def test_two_concurrent_pushes_serialize_on_the_serving_roots_lock(store, exported, monkeypatch):
    import threading
    import time

    serving = f"{ROOT}/serving"
    copies, copy_tree = [], files.copy_tree

    def slow_copy(source, dest, last=()):
        start = time.monotonic()
        time.sleep(0.4)  # long enough for the other push to reach its copy if nothing held it back
        names = copy_tree(source, dest, last)
        copies.append((dest, start, time.monotonic()))
        return names

    monkeypatch.setattr(files, "copy_tree", slow_copy)
    start, results = threading.Barrier(2), {}

    def push(model, version, source):
        start.wait()
        results[model] = ServingRoot(serving).push(_record(source, version, model=model), poll=0.05)

    threads = [
        threading.Thread(target=push, args=("taxi_standard", 201601010000, exported["new"])),
        threading.Thread(target=push, args=("taxi_coarse", 201601010000, exported["old"])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r.pushed for r in results.values()) and len(results) == 2
    (_, _, first_end), (_, second_start, _) = sorted(copies, key=lambda c: c[1])
    assert first_end <= second_start  # one push at a time
    config = files.read_text(f"{serving}/models.config")
    assert 'name: "taxi_standard"' in config and 'name: "taxi_coarse"' in config  # neither config lost the other
    assert not files.exists(f"{serving}/.deploy.lock")  # released


def test_a_held_lock_names_its_holder_and_a_stale_one_is_broken(store, exported, caplog):
    import threading

    serving = f"{ROOT}/serving"
    record = _record(exported["new"], 201601010000)
    outcome = {}

    def push_meanwhile():
        try:
            ServingRoot(serving).push(record, wait=0.5, poll=0.1)
        except gcs_lock.LockTimeout as error:
            outcome["error"] = str(error)

    with ServingRoot(serving).lock(holder="push of taxi version 1 (taxi_daily_retrain, manual__x)"):
        thread = threading.Thread(target=push_meanwhile)
        thread.start()
        thread.join(30)
    message = outcome["error"]
    assert "held by push of taxi version 1 (taxi_daily_retrain, manual__x)" in message
    assert f"pid {os.getpid()}" in message and f"{serving}/.deploy.lock" in message
    assert files.list_files(serving) == []  # the push that gave up wrote nothing

    # a holder that died left its lock behind: a push breaks it once older than the stale timeout
    files.write_text(
        f"{serving}/.deploy.lock",
        json.dumps({"holder": "push of taxi_standard version 1 (dead)", "process": "pid 1 on gone"}),
    )
    with caplog.at_level("WARNING", logger="taxi_pipeline.gcs_lock"):
        assert ServingRoot(serving).push(record, stale_after=0.5, poll=0.1).pushed
    assert "Breaking the stale lock" in caplog.text and "push of taxi_standard version 1 (dead)" in caplog.text
    assert not files.exists(f"{serving}/.deploy.lock")
    assert ServingRoot(serving).versions("taxi_standard") == [201601010000]


def test_a_retried_push_rewrites_no_identical_object(store, exported, tmp_path, monkeypatch):
    serving = f"{ROOT}/serving"
    record = _record(exported["new"], 201601010000)
    assert ServingRoot(serving).push(record).pushed
    before = _generations(store, "serving/")

    assert ServingRoot(serving).push(record).pushed  # the retry
    assert _generations(store, "serving/") == before  # not one object rewritten, models.config included

    # a rerun of the window with another model for the same version: only what differs is
    # rewritten, and saved_model.pb is gone while it is (the version is never half old, half new)
    rerun = _saved_model(tmp_path / "rerun", "new")
    (rerun / "variables/variables.data-00000-of-00001").write_text("rerun weights")
    (rerun / "saved_model.pb").write_text("rerun graph")
    source = f"{ROOT}/artifacts/taxi_daily_retrain/run=rerun/variants/standard/model"
    files.copy_tree(str(rerun), source, last=("saved_model.pb",))
    version = f"{serving}/taxi_standard/201601010000"
    seen, copy_file = [], files.copy_file

    def watched(source, dest):
        seen.append((dest.rsplit("/", 1)[-1], files.exists(f"{version}/saved_model.pb")))
        return copy_file(source, dest)

    monkeypatch.setattr(files, "copy_file", watched)
    assert ServingRoot(serving).push(replace(record, source=source)).pushed
    assert seen == [("variables.data-00000-of-00001", False), ("saved_model.pb", False)]
    after = _generations(store, "serving/")
    prefix = "taxi_standard/201601010000/"
    for name in ("fingerprint.pb", "variables/variables.index", "assets/vocab_company.txt"):
        assert after[prefix + name] == before[prefix + name]
    assert (
        after[prefix + "saved_model.pb"]
        > after[prefix + "variables/variables.data-00000-of-00001"]
        > before[prefix + "saved_model.pb"]
    )
    assert files.read_text(f"{version}/saved_model.pb") == "rerun graph"
    assert json.loads(files.read_text(f"{serving}/taxi_standard/records/201601010000.json"))["source"] == source
    assert after["models.config"] == before["models.config"]  # the same versions: the same config, left alone


def test_a_change_by_another_writer_is_seen_at_once(store):
    """gcsfs caches listings in its process; a push decided on a stale one could put an older window
    over a newer one. The file API asks GCS each time."""
    root = ServingRoot(f"{ROOT}/serving")

    def push_elsewhere(version: int) -> None:  # another worker's push, not through this process's file API
        store.bucket(BUCKET).blob(f"serving/taxi/{version}/saved_model.pb").upload_from_string(f"{version}")

    push_elsewhere(201601010000)
    assert root.versions("taxi") == [201601010000] and files.children(f"{ROOT}/serving") == ["taxi"]
    push_elsewhere(201601020000)
    assert root.versions("taxi") == [201601010000, 201601020000]
    store.bucket(BUCKET).blob("serving/taxi/201601020000/saved_model.pb").delete()
    assert root.versions("taxi") == [201601010000]
