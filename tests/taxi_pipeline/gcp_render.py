"""Parse the DAGs with TAXI_PLATFORM=gcp (no credentials, no network) and render every task for a
window: prints one JSON document with each task's rendered fields (run by test_platform_gcp.py in
a subprocess, so the platform setting does not leak into the test session)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import yaml

SERVED_VERSION = 201601010000


def pulled_xcom(task_ids: str, key: str = "return_value"):
    """The XComs the templates pull: find_served_model's (the scoring step) and decide_approval's
    question (the approval gate's body)."""
    if (task_ids, key) == ("decide_approval", "question"):
        return "Promote standard? (require_approval=always)"
    assert (task_ids, key) == ("find_served_model", "return_value"), (task_ids, key)
    return {
        "model": "taxi",
        "label": "stable",
        "version": SERVED_VERSION,
        "path": f"gs://taxi-test-taxi-mlops/serving/taxi/{SERVED_VERSION}",
    }


def served_path(model: str, label: str) -> str:
    """The taxi_served_path macro without GCS: the version served at `label` (read from the serving
    root when a task renders; offline, SERVED_VERSION)."""
    return f"gs://taxi-test-taxi-mlops/serving/{model}/{SERVED_VERSION}"


def render(dag, end: datetime, start: datetime) -> dict:
    from airflow.sdk.execution_time import macros

    dag.user_defined_macros = {**(dag.user_defined_macros or {}), "taxi_served_path": served_path}

    params = {k: v for k, v in dag.params.dump().items()} if hasattr(dag.params, "dump") else dict(dag.params)
    context = {
        "dag": dag,
        "params": params,
        "run_id": "scheduled__" + end.isoformat(),
        "data_interval_start": start,
        "data_interval_end": end,
        "logical_date": start,
        "macros": macros,
        "ds": start.strftime("%Y-%m-%d"),
        "var": {"value": NoVariables()},
    }
    out = {}
    for task in dag.tasks:
        context["task"] = task
        # what the pod operator labels its pod with (no task instance when rendering offline)
        context["ti"] = SimpleNamespace(
            dag_id=dag.dag_id,
            task_id=task.task_id,
            run_id=context["run_id"],
            try_number=1,
            map_index=-1,
            start_date=end,
            xcom_pull=pulled_xcom,
        )
        task.render_template_fields(context, jinja_env=dag.get_template_env())
        fields = {name: getattr(task, name) for name in task.template_fields}
        entry = {"operator": type(task).__name__}
        if type(task).__name__ == "WindowExtractOperator":
            entry["jobs"] = task.jobs(context)
        if type(task).__name__ == "TFJobTrainOperator":
            entry["tfjob"] = yaml.safe_load(task.yaml_conf)
        if type(task).__name__ == "BeamRunPythonPipelineOperator":
            entry["pipeline_options"] = task.pipeline_options
            entry["runner"] = task.runner
            entry["py_file"], entry["py_options"] = task.py_file, task.py_options
            entry["job_name"] = task.dataflow_config.job_name
            entry["dataflow"] = {
                k: getattr(task.dataflow_config, k)
                for k in ("project_id", "location", "service_account", "append_job_name")
            }
        if type(task).__name__ in (
            "GCSToBigQueryOperator",
            "BigQueryToGCSOperator",
            "BigQueryTablePartitionExistenceSensor",
        ):
            entry.update(fields)
        if type(task).__name__ == "GCSToBigQueryOperator":
            entry.update(write_disposition=task.write_disposition, time_partitioning=task.time_partitioning)
        if type(task).__name__ == "ChampionDeployOperator":
            entry.update(
                deployment=task.deployment,
                service=task.service,
                network_policy=task.network_policy,
                endpoint_id=task.endpoint_id,
                traffic_split=task.traffic_split,
                deployed_model=task.deployed_model,
            )
        if type(task).__name__ == "RuntimePodOperator":
            from kubernetes.client import ApiClient

            plain = ApiClient().sanitize_for_serialization
            # the pod the operator asks for, from its rendered fields (building it for real needs the cluster)
            entry["random_name_suffix"] = task.random_name_suffix
            entry["pod"] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": task.name, "namespace": task.namespace},
                "spec": {
                    "serviceAccountName": task.service_account_name,
                    "automountServiceAccountToken": task.automount_service_account_token,
                    "securityContext": task.security_context,
                    "volumes": plain(task.volumes),
                    "containers": [
                        {
                            "name": "base",
                            "image": task.image,
                            "command": task.cmds,
                            "args": task.arguments,
                            "env": plain(task.env_vars),
                            "resources": plain(task.container_resources),
                            "securityContext": task.container_security_context,
                            "volumeMounts": plain(task.volume_mounts),
                        }
                    ],
                },
            }
        if hasattr(task, "partition_id"):
            entry["partition_id"] = task.partition_id
        entry["rendered"] = json.loads(json.dumps(fields, default=str))
        out[task.task_id] = entry
    return out


class NoVariables:
    """`var.value` of a deployment that sets no Airflow Variable: every setting takes its default."""

    def get(self, key, default=None):
        return default

    def __getattr__(self, key):
        raise KeyError(f"no Airflow Variable {key}")


def parse_asking_no_variable(dag_folder: str):
    """Parse the DAGs with Variable.get (the SDK's and the metadata DB's) recording each call and failing."""
    from unittest import mock

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.variable import Variable as ModelVariable
    from airflow.sdk import Variable

    asked = []

    def refuse(key, *args, **kwargs):
        asked.append(key)
        raise RuntimeError(f"Variable {key} asked while parsing")

    with (
        mock.patch.object(Variable, "get", side_effect=refuse),
        mock.patch.object(ModelVariable, "get", side_effect=refuse),
    ):
        return DagBag(dag_folder=dag_folder), asked


def main() -> None:
    bag, asked = parse_asking_no_variable(str(Path(__file__).resolve().parents[2] / "dags"))
    result = {
        "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
        "dags": {},
        "variables_asked_while_parsing": asked,
    }
    windows = {
        "taxi_daily_retrain": (datetime(2015, 12, 31, tzinfo=UTC), datetime(2016, 1, 1, tzinfo=UTC)),
        "taxi_sliding_window": (datetime(2015, 1, 1, tzinfo=UTC), datetime(2015, 2, 1, tzinfo=UTC)),
        "taxi_batch_scoring": (datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 1, 2, tzinfo=UTC)),
        "taxi_model_monitor": (datetime(2016, 1, 1, tzinfo=UTC), datetime(2016, 1, 2, tzinfo=UTC)),
    }
    for dag_id, dag in bag.dags.items():
        result["dags"][dag_id] = {"tasks": sorted(t.task_id for t in dag.tasks)}
        if dag_id in windows and "render" in sys.argv:
            start, end = windows[dag_id]
            result["dags"][dag_id]["rendered"] = render(dag, end, start)
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
