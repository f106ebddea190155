"""A BigQuery stand-in over the local DuckDB warehouse, behind the google provider's BigQueryHook.

Why at the hook: BigQueryInsertJobOperator, BigQueryToGCSOperator and the partition sensor run
their own code and submit the real job configurations; only BigQuery's side is answered here:
- a query job must be the project's window SQL (include/taxi_pipeline/sql/window.sql as BigQuery
  runs it, on the configured source table); it is run with the same file's DuckDB translation
  (taxi_pipeline.queries.duckdb_sql, what the local platform runs) and its named parameters, on
  the warehouse, into an in-memory destination table;
- an extract job writes that table's real rows as CSV (with its header) to the destination URI
  (`part-*` -> shard 000000000000) through taxi_pipeline.files, i.e. into the GCS emulator;
- `table_partition_exists` (the sensor's poke): an hourly partition YYYYMMDDHH exists once the
  warehouse holds trips of that hour or later (the hour has landed).
Jobs are kept by id (get_job finds an earlier try's job; a second insert of an id is a Conflict).
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from unittest import mock


class Job:
    """A finished BigQuery job as the provider's operators use it (google.cloud.bigquery's job API)."""

    def __init__(self, job_id: str, configuration: dict, project: str, location: str):
        self.job_id, self.configuration, self.project, self.location = job_id, configuration, project, location
        self.state, self.error_result, self.errors = "DONE", None, None

    def to_api_repr(self) -> dict:
        return {
            "configuration": self.configuration,
            "jobReference": {"jobId": self.job_id, "projectId": self.project, "location": self.location},
        }

    def result(self, timeout=None, retry=None):
        return self


class WarehouseBigQuery:
    def __init__(self, warehouse: Path, source_table: str):
        self.warehouse, self.source_table = warehouse, source_table
        self.jobs: dict[str, Job] = {}
        self.tables: dict[str, tuple[list[str], list[tuple]]] = {}  # project.dataset.table -> (columns, rows)
        self.partition_checks: list[tuple[str, str]] = []

    def insert_job(self, configuration, job_id=None, project_id=None, location=None, nowait=False, **kwargs):
        from google.api_core.exceptions import Conflict

        if job_id in self.jobs:
            raise Conflict(f"Already Exists: Job {project_id}:{location}.{job_id}")
        if "query" in configuration:
            self._query(configuration["query"])
        elif "extract" in configuration:
            self._extract(configuration["extract"])
        else:
            raise AssertionError(f"the stand-in runs query and extract jobs only: {sorted(configuration)}")
        job = self.jobs[job_id] = Job(job_id, configuration, project_id, location)
        return job

    def _query(self, query: dict) -> None:
        from taxi_pipeline.queries import bigquery_sql, duckdb_sql
        from taxi_pipeline.warehouse import connect

        assert query["query"] == bigquery_sql("window", f"`{self.source_table}`"), "not the window SQL"
        assert query["useLegacySql"] is False and query["parameterMode"] == "NAMED"
        params = {p["name"]: p["parameterValue"]["value"] for p in query["queryParameters"]}
        with connect(self.warehouse) as con:
            rel = con.sql(duckdb_sql("window"), params=params)
            columns, rows = list(rel.columns), rel.fetchall()
        table = query["destinationTable"]
        self.tables[f"{table['projectId']}.{table['datasetId']}.{table['tableId']}"] = (columns, rows)

    def _extract(self, extract: dict) -> None:
        from taxi_pipeline import files

        source = extract["sourceTable"]
        columns, rows = self.tables[f"{source['projectId']}.{source['datasetId']}.{source['tableId']}"]
        assert extract["destinationFormat"] == "CSV"
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if extract.get("printHeader", True):
            writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
        (uri,) = extract["destinationUris"]
        files.write_text(uri.replace("*", "0" * 12), out.getvalue())

    def get_job(self, job_id, project_id=None, location=None):
        from google.api_core.exceptions import NotFound

        if job_id not in self.jobs:
            raise NotFound(f"Not found: Job {project_id}:{location}.{job_id}")
        return self.jobs[job_id]

    def get_table(self, name: str):
        return SimpleNamespace(num_rows=len(self.tables[name][1]))

    def table_partition_exists(self, table: str, partition_id: str) -> bool:
        from taxi_pipeline.warehouse import latest_trip_start

        self.partition_checks.append((table, partition_id))
        assert table == self.source_table, table
        hour = datetime.strptime(partition_id, "%Y%m%d%H").replace(tzinfo=UTC)
        latest = latest_trip_start(self.warehouse)
        return latest is not None and latest >= hour


@contextlib.contextmanager
def bigquery_over_warehouse(warehouse: Path, source_table: str) -> Iterator[WarehouseBigQuery]:
    """BigQueryHook's job, table and partition calls answered by the warehouse (see the module)."""
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

    fake = WarehouseBigQuery(warehouse, source_table)

    def partition_exists(self, dataset_id, table_id, partition_id, project_id):
        return fake.table_partition_exists(f"{project_id}.{dataset_id}.{table_id}", partition_id)

    with (
        mock.patch.object(BigQueryHook, "insert_job", lambda self, **kw: fake.insert_job(**kw)),
        mock.patch.object(BigQueryHook, "get_job", lambda self, **kw: fake.get_job(**kw)),
        mock.patch.object(BigQueryHook, "get_client", lambda self, **kw: fake),
        mock.patch.object(BigQueryHook, "table_partition_exists", partition_exists),
    ):
        yield fake
