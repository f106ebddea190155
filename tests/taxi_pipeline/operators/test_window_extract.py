"""WindowExtractOperator (the gcp DAG's extract_window) executed offline: rendered for a window,
run against a fake BigQuery behind the google provider's BigQueryHook (insert_job, get_job,
get_client patched: the provider's BigQueryInsertJobOperator and BigQueryToGCSOperator run as they
are) and the GCS emulator, into which the fake's export jobs write their part files.

The fake keeps its jobs across tries, as BigQuery does: a retry finds the jobs of the earlier try
under their deterministic ids, reuses the finished ones, reattaches to the running ones and runs
the failed ones again under a new id.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from google.api_core.exceptions import BadRequest, Conflict, NotFound

from gcp_dag import PROJECT, TaskStateStore, task_run
from gcs_emulator import BUCKET, ROOT

WINDOW = (datetime(2015, 12, 31, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC))
DATASET = "taxi_mlops_windows"  # the gcp settings' default extract dataset
ROWS = {"window_train": 1200, "window_eval": 300, "reference_train": 1100, "reference_eval": 250}


class Job:
    """A BigQuery job as the provider's operators use it (google.cloud.bigquery's job API)."""

    def __init__(self, bigquery, job_id: str, configuration: dict):
        self.bigquery, self.job_id, self.configuration = bigquery, job_id, configuration
        self.state, self.error_result, self.errors = "RUNNING", None, None

    def to_api_repr(self) -> dict:
        return {"configuration": self.configuration, "jobReference": {"jobId": self.job_id, "projectId": PROJECT}}

    def result(self, timeout=None, retry=None):
        if self.state != "DONE":
            self.bigquery.finish(self)
        if self.error_result:  # as google.cloud.bigquery raises a failed job's error
            raise BadRequest(self.error_result["message"], errors=[self.error_result])
        return self


class FakeBigQuery:
    def __init__(self):
        self.jobs: dict[str, Job] = {}
        self.inserted: list[str] = []
        self.tables: dict[str, int] = {}
        self.fail: dict[str, str] = {}  # table -> the error message of its query job
        self.die_after_submitting: set[str] = set()  # ids (our part) of jobs whose try dies once they are submitted

    def insert_job(self, configuration, job_id=None, project_id=None, location=None, nowait=False, **kwargs):
        assert project_id == PROJECT and location == "US"
        if job_id in self.jobs:
            raise Conflict(f"Already Exists: Job {project_id}:{location}.{job_id}")
        job = self.jobs[job_id] = Job(self, job_id, configuration)
        self.inserted.append(job_id)
        dying = {i for i in self.die_after_submitting if job_id.startswith(i)}
        if dying:
            self.die_after_submitting -= dying
            raise SystemExit("the worker died (the job goes on in BigQuery)")
        if not nowait:
            job.result()
        return job

    def finish(self, job: Job) -> None:
        """What BigQuery does: the query writes its destination table, the export its part files."""
        from taxi_pipeline import files

        job.state = "DONE"
        if "query" in job.configuration:
            query = job.configuration["query"]
            table = query["destinationTable"]
            assert query["writeDisposition"] == "WRITE_TRUNCATE" and query["useLegacySql"] is False
            if table["tableId"] in self.fail:
                job.error_result = {"reason": "invalidQuery", "message": self.fail[table["tableId"]]}
                return
            key = f"{table['projectId']}.{table['datasetId']}.{table['tableId']}"
            self.tables[key] = ROWS[re.sub(r"^.*__", "", table["tableId"])]
        else:
            extract = job.configuration["extract"]
            source = extract["sourceTable"]
            rows = self.tables[f"{source['projectId']}.{source['datasetId']}.{source['tableId']}"]
            assert extract["destinationFormat"] == "CSV" and extract["printHeader"] is True
            (uri,) = extract["destinationUris"]
            for shard in range(2):
                files.write_text(
                    uri.replace("*", f"{shard:012d}"), f"trip_miles\n{rows} rows, shard {shard} of {job.job_id}\n"
                )

    def get_job(self, job_id, project_id=None, location=None):
        if job_id not in self.jobs:
            raise NotFound(f"Not found: Job {project_id}:{location}.{job_id}")
        return self.jobs[job_id]

    def get_table(self, name: str):
        return SimpleNamespace(num_rows=self.tables[name])


@pytest.fixture
def bigquery(emulator, monkeypatch):
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    emulator.wipe(keep_buckets=True)
    monkeypatch.setenv("TAXI_PLATFORM", "gcp")
    fake = FakeBigQuery()
    monkeypatch.setattr(BigQueryHook, "insert_job", lambda self, **kwargs: fake.insert_job(**kwargs))
    monkeypatch.setattr(BigQueryHook, "get_job", lambda self, **kwargs: fake.get_job(**kwargs))
    monkeypatch.setattr(BigQueryHook, "get_client", lambda self, **kwargs: fake)
    return fake


def _extract(try_number: int, state: TaskStateStore):
    task, context = task_run("taxi_daily_retrain", "extract_window", *WINDOW, try_number=try_number, state=state)
    return task, context, task.execute(context)


def _files(store) -> dict[str, int]:
    """The run's extracted objects (relative to its data folder) and their generations."""
    return {
        b.name.split("/data/", 1)[1]: int(b.generation)
        for b in store.list_blobs(BUCKET, prefix="artifacts/")
        if "/data/" in b.name
    }


@pytest.fixture
def store(emulator):
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    return GCSHook(gcp_conn_id="google_cloud_default").get_conn()


def test_extract_runs_a_query_and_an_export_per_window_and_split_into_the_runs_layout(bigquery, store):
    state = TaskStateStore()
    task, context, rows = _extract(1, state)

    assert rows == {"window": {"train": 1200, "eval": 300}, "reference": {"train": 1100, "eval": 250}}
    jobs = task.jobs(context)
    assert len(bigquery.inserted) == 8
    for job, (query_id, export_id) in zip(
        jobs, zip(bigquery.inserted[::2], bigquery.inserted[1::2], strict=False), strict=False
    ):
        # the operators' ids: ours (per run, window and split) and the hash of the job's configuration
        assert re.fullmatch(re.escape(job["query"]["job_id"]) + "_[0-9a-f]{32}", query_id)
        assert re.fullmatch(re.escape(job["export"]["job_id"]) + "_[0-9a-f]{32}", export_id)
        query = bigquery.jobs[query_id].configuration
        assert query["query"]["destinationTable"] == {
            "projectId": PROJECT,
            "datasetId": DATASET,
            "tableId": job["export"]["source_project_dataset_table"].rsplit(".", 1)[1],
        }
        assert query["labels"] == {"airflow-dag": "taxi_daily_retrain", "airflow-task": "extract_window"}
        export = bigquery.jobs[export_id].configuration
        assert export["extract"]["destinationUris"] == job["export"]["destination_cloud_storage_uris"]
        assert export["labels"] == query["labels"]
    run_data = jobs[0]["export"]["destination_cloud_storage_uris"][0].split("/data/")[0] + "/data"
    assert run_data.startswith(f"{ROOT}/artifacts/taxi_daily_retrain/window=20150101T0000-20160101T0000/run=")
    assert sorted(_files(store)) == [
        f"{split}/part-{shard:012d}.csv"
        for split in ("eval", "reference/eval", "reference/train", "train")
        for shard in range(2)
    ]
    assert state == {}  # nothing left in task_state_store: the job ids are the durable state
    assert context["ti"].xcoms["job_id_path"].startswith(f"{PROJECT}:US:")  # the provider's job link XComs


def test_a_retry_after_the_jobs_finished_reuses_them_and_keeps_their_files(bigquery, store):
    state = TaskStateStore()
    _, _, rows = _extract(1, state)
    files = _files(store)

    _, _, again = _extract(2, state)  # e.g. the task failed after the extraction, or was cleared
    assert again == rows
    assert len(bigquery.inserted) == 8  # no job ran twice (and none was refused as "already DONE")
    assert _files(store) == files  # the part files of the first try, not one rewritten or lost


def test_a_failed_job_fails_the_task_with_its_window_split_and_error_and_a_retry_reruns_only_it(bigquery, store):
    from taxi_pipeline import files

    bigquery.fail["taxi_daily_retrain__20150101t0000_20160101t0000__reference_train"] = (
        "Resources exceeded during query execution"
    )
    state = TaskStateStore()
    with pytest.raises(Exception) as failure:
        _extract(1, state)
    message = str(failure.value)
    assert "the reference window's train split failed in BigQuery" in message
    assert "Resources exceeded during query execution" in message
    assert f"{PROJECT}.{DATASET}.taxi_daily_retrain__20150101t0000_20160101t0000__reference_train" in message
    assert "data/reference/train/part-*.csv" in message
    first = list(bigquery.inserted)
    assert len(first) == 5  # window train and eval (query, export), then the failed query
    done = _files(store)
    assert sorted(done) == [f"{split}/part-{s:012d}.csv" for split in ("eval", "train") for s in range(2)]

    del bigquery.fail["taxi_daily_retrain__20150101t0000_20160101t0000__reference_train"]  # the cause fixed
    run_prefix = next(iter(store.list_blobs(BUCKET, prefix="artifacts/"))).name.split("/data/")[0]
    stray = f"{ROOT}/{run_prefix}/data/reference/train/part-000000000009.csv"
    files.write_text(stray, "a part file no export of this run wrote (an export that ran again starts clean)")
    _, _, rows = _extract(2, state)
    assert rows["reference"] == {"train": 1100, "eval": 250}
    rerun = bigquery.inserted[len(first) :]
    assert rerun[0] == first[-1] + "_r1"  # the failed query again, under a new id
    assert len(rerun) == 4  # then its export and the eval split's query and export; nothing done is redone
    files = _files(store)
    assert {k: files[k] for k in done} == done and len(files) == 8


def test_a_retry_reattaches_to_a_job_the_dead_try_left_running(bigquery, store):
    state = TaskStateStore()
    task, context = task_run("taxi_daily_retrain", "extract_window", *WINDOW)
    eval_export = task.jobs(context)[1]["export"]["job_id"]
    bigquery.die_after_submitting.add(eval_export)
    with pytest.raises(SystemExit):
        _extract(1, state)
    (running_job,) = [j for i, j in bigquery.jobs.items() if i.startswith(eval_export)]
    assert running_job.state == "RUNNING"  # it goes on in BigQuery without the task

    _, _, rows = _extract(2, state)
    assert [i for i in bigquery.inserted if i.startswith(eval_export)] == [running_job.job_id]  # not submitted again
    assert running_job.state == "DONE" and rows["window"]["eval"] == 300
    assert len(bigquery.inserted) == 8 and len(_files(store)) == 8
