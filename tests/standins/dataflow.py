"""A Dataflow stand-in for BeamRunPythonPipelineOperator(runner="DataflowRunner"), offline.

Why at these two boundaries: the operator and both hooks run their own code (the DataflowRunner's
pipeline options, the job name, labels, the command line, the job id read from the launcher's
output, DataflowHook.wait_for_done's polling); only Google's side is answered here:
- the launch (`run_beam_command` of the Beam hook): the command the DataflowRunner would get is run
  with `--runner=FnApiRunner` (Beam's local engine) in place of `--runner=DataflowRunner`; every
  other option is kept (the local runner ignores the Dataflow ones: project, region, temp and
  staging locations, sdk_container_image, service account, labels, experiments). The job id is
  the stand-in's, announced on the launcher's output as the DataflowRunner logs it
  ("Created job with id: [...]"). Unlike Dataflow's launcher, the process runs to its end here:
  its exit sets the job's state (JOB_STATE_DONE / JOB_STATE_FAILED) and a failure fails the task
  at once, with the pipeline's own output in the task log.
- the Dataflow API (`DataflowHook.get_conn`): projects.locations.jobs get/list/getMetrics/update and
  messages.list answer from the stand-in's jobs, so the hook's wait reads the recorded state and a
  cancel (the operator's on_kill, e.g. on the task's timeout) kills the job's local process; no
  process outlives the stand-in.
The runtime processes inherit this process's environment (the Beam hook passes no env):
`runtime_env` is set for the duration.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from unittest import mock


class _Request:
    def __init__(self, answer):
        self.answer = answer

    def execute(self, num_retries=0):
        return self.answer()


class _Jobs:
    def __init__(self, dataflow: DataflowStandin):
        self.dataflow = dataflow

    def get(self, projectId, location, jobId, **_):
        return _Request(lambda: dict(self.dataflow.jobs[jobId]))

    def list(self, projectId, location, **_):
        return _Request(
            lambda: {
                "jobs": [
                    dict(j)
                    for j in self.dataflow.jobs.values()
                    if j["projectId"] == projectId and j["location"] == location
                ]
            }
        )

    def list_next(self, previous_request=None, previous_response=None):
        return None

    def update(self, projectId, location, jobId, body, **_):
        """A cancel (the operator's on_kill): the job's state becomes the requested one."""

        def answer():
            job = self.dataflow.jobs[jobId]
            job["currentState"] = body.get("requestedState", job["currentState"])
            self.dataflow.kill(jobId)
            return dict(job)

        return _Request(answer)

    def getMetrics(self, projectId, location, jobId, **_):
        return _Request(lambda: {"metrics": []})

    def messages(self):
        return _Messages()


class _Messages:
    """jobs().messages(): no job messages (the local engine logs to the task log instead)."""

    def list(self, **_):
        return _Request(lambda: {})

    def list_next(self, **_):
        return None


class _Api:
    """The discovery client's chain: projects().locations().jobs()."""

    def __init__(self, dataflow: DataflowStandin):
        self.dataflow = dataflow

    def projects(self):
        return self

    def locations(self):
        return self

    def jobs(self):
        return _Jobs(self.dataflow)


class DataflowStandin:
    def __init__(self):
        self.jobs: dict[str, dict] = {}  # job id -> the API's Job (id, name, projectId, location, currentState, ...)
        self.commands: list[list[str]] = []  # each pipeline's command line, as the DataflowRunner would get it
        self.processes: dict[str, subprocess.Popen] = {}  # job id -> its local process
        self._starting: str | None = None

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        """The Beam hook's Popen: a job's process is kept, so a cancel (or the stand-in's exit) ends it."""
        proc = subprocess.Popen(*args, **kwargs)
        if self._starting:
            self.processes[self._starting] = proc
        return proc

    def kill(self, job_id: str | None = None) -> None:
        for jid, proc in self.processes.items():
            if job_id in (None, jid) and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def run(
        self,
        original,
        cmd,
        log,
        process_line_callback=None,
        working_directory=None,
        is_dataflow_job_id_exist_callback=None,
    ):
        if "--runner=DataflowRunner" not in cmd:
            return original(
                cmd=cmd,
                log=log,
                process_line_callback=process_line_callback,
                working_directory=working_directory,
                is_dataflow_job_id_exist_callback=is_dataflow_job_id_exist_callback,
            )
        self.commands.append(list(cmd))
        options = dict(a[2:].split("=", 1) for a in cmd if a.startswith("--") and "=" in a)
        job_id = f"{options.get('region', 'standin')}-{uuid.uuid4().hex[:16]}"
        self.jobs[job_id] = {
            "id": job_id,
            "name": options.get("job_name", ""),
            "projectId": options.get("project"),
            "location": options.get("region"),
            "type": "JOB_TYPE_BATCH",
            "currentState": "JOB_STATE_RUNNING",
        }
        if process_line_callback:
            process_line_callback(f"INFO:apache_beam.runners.dataflow: Created job with id: [{job_id}]")
        local = ["--runner=FnApiRunner" if a == "--runner=DataflowRunner" else a for a in cmd]
        log.info("Dataflow stand-in: job %s runs locally: %s", job_id, " ".join(local))
        self._starting = job_id
        try:
            original(cmd=local, log=log, process_line_callback=None, working_directory=working_directory)
        except BaseException:
            if self.jobs[job_id]["currentState"] == "JOB_STATE_RUNNING":  # not cancelled: failed
                self.jobs[job_id]["currentState"] = "JOB_STATE_FAILED"
            self.kill(job_id)  # a timeout (the task's) leaves no pipeline running
            raise
        finally:
            self._starting = None
        self.jobs[job_id]["currentState"] = "JOB_STATE_DONE"


@contextlib.contextmanager
def dataflow_standin(runtime_env: dict[str, str] | None = None) -> Iterator[DataflowStandin]:
    """The Beam hook's pipeline launch and DataflowHook's API answered locally (see the module)."""
    from airflow.providers.apache.beam.hooks import beam as beam_hooks
    from airflow.providers.google.cloud.hooks.dataflow import DataflowHook

    standin = DataflowStandin()
    original = beam_hooks.run_beam_command

    def run(cmd, log, process_line_callback=None, working_directory=None, is_dataflow_job_id_exist_callback=None):
        return standin.run(
            original, cmd, log, process_line_callback, working_directory, is_dataflow_job_id_exist_callback
        )

    launcher = SimpleNamespace(
        **{k: getattr(subprocess, k) for k in ("PIPE", "STDOUT", "check_output")}, Popen=standin.popen
    )
    try:
        with (
            mock.patch.object(beam_hooks, "run_beam_command", run),
            mock.patch.object(beam_hooks, "subprocess", launcher),
            mock.patch.object(DataflowHook, "get_conn", lambda self: _Api(standin)),
            mock.patch.dict(os.environ, runtime_env or {}),
        ):
            yield standin
    finally:
        standin.kill()
