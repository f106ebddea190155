"""The gcp platform's stages that are several provider operators under one task id (the DAG has
the same tasks on both platforms): each runs the providers' operators one after the other, in the
task's own context, so their XComs and extra links are the task's.

- `WindowExtractOperator` (extract_window): per window of the run and split, the window SQL
  (include/taxi_pipeline/sql/window.sql, as BigQuery runs it) with BigQueryInsertJobOperator into
  `<dataset>.<dag>__<window key>__<name>_<split>`, then BigQueryToGCSOperator into the run's layout.
  Job ids are deterministic per run, window and split (the provider adds a hash of the job's
  configuration), and a retry finds the jobs of earlier tries by those ids: a finished one is
  reused (its table or files are there), a running one is waited on, a failed one is run again as
  `<id>_r<n>`. An export that runs again first deletes its split's part files of an earlier try.
- `VertexPushOperator` (<variant>.push): a blessed model becomes the run's version under the GCS
  model base path (deployment.push_blessed_variant), then a new version of its Vertex AI model
  (UploadModelOperator with parent_model, the prebuilt TF serving container).
- `ChampionDeployOperator` (promote_champion): the best blessed variant is pushed as the version of
  `taxi` labelled `stable` (one hold of the serving root's lock); the TF-Serving Deployment and
  Service are applied; the version is uploaded to Vertex AI and deployed to the endpoint
  (CreateEndpointOperator only when the endpoint does not exist, DeployModelOperator with the
  traffic split: all the traffic to the new deployment); a retry finds the version already
  deployed with all the traffic and deploys nothing. Then every other deployed model of the
  endpoint is undeployed (UndeployModelOperator; each holds at least one replica) except the
  previous champion, the deployment that had the most traffic before the new one was deployed:
  it stays at 0% traffic, so a rollback is a traffic switch. Which one that was is kept in the
  task's task_state_store before the deployment (a retry finds the new version already serving
  and the previous champion no longer told by its traffic); a retry after a partial undeploy
  undeploys the rest, a rerun nothing more. A deployed model with traffic is never undeployed;
  without the stored previous champion (no task_state_store) nothing is. One log line per
  undeployed model: its deployed model id, model version and why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from airflow.providers.google.cloud.links.vertex_ai import VertexAIEndpointLink, VertexAIModelLink
from airflow.providers.google.cloud.operators.bigquery import BigQueryInsertJobOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowConfiguration
from airflow.providers.google.cloud.operators.kubernetes_engine import GKEStartPodOperator
from airflow.providers.google.cloud.operators.vertex_ai.model_service import UploadModelOperator
from airflow.providers.google.cloud.transfers.bigquery_to_gcs import BigQueryToGCSOperator
from airflow.sdk import BaseOperator


class TemplatedDataflowConfiguration(DataflowConfiguration):
    """DataflowConfiguration whose project and service account are templated too (the gcp
    settings are templates that read the Airflow Variables when the task runs)."""

    template_fields = (*DataflowConfiguration.template_fields, "project_id", "service_account")


class RuntimePodOperator(GKEStartPodOperator):
    """GKEStartPodOperator whose Kubernetes service account is templated too (a gcp setting), and
    whose pod has one name per DAG, task and run (`taxi-<dag>-<task>-<hash of the run id>`, no
    random suffix): a retry of the task names the same pod, two runs (a backfill beside the daily
    run) never share one, and the pod of a run can be found from the run."""

    template_fields = (*GKEStartPodOperator.template_fields, "service_account_name")

    def __init__(self, **kwargs):
        kwargs["random_name_suffix"] = False
        super().__init__(**kwargs)

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        self.name = run_pod_name(context["dag"].dag_id, self.task_id, context["run_id"])


def run_pod_name(dag_id: str, task_id: str, run_id: str) -> str:
    from taxi_pipeline.k8s import k8s_name

    return k8s_name("taxi", dag_id.removeprefix("taxi_"), task_id, _run_hash(run_id))


def _run_hash(run_id: str) -> str:
    return hashlib.sha1(run_id.encode()).hexdigest()[:10]


class WindowExtractOperator(BaseOperator):
    template_fields: Sequence[str] = ("project_id", "location", "dataset", "source_table", "gcp_conn_id")
    ui_color = "#e3f2fd"

    def __init__(
        self,
        *,
        project_id: str,
        location: str,
        dataset: str,
        source_table: str,
        gcp_conn_id: str = "google_cloud_default",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.project_id, self.location, self.dataset = project_id, location, dataset
        self.source_table, self.gcp_conn_id = source_table, gcp_conn_id

    def jobs(self, context) -> list[dict]:
        """The query and export of each window and split of the run: the operators' arguments."""
        from taxi_pipeline.layout import SPLITS
        from taxi_pipeline.queries import bigquery_sql
        from taxi_pipeline.run_context import run_layout, window_plan

        layout, plan = run_layout(context), window_plan(context)
        sql = bigquery_sql("window", f"`{self.source_table}`")
        prefix = f"taxi_{_run_hash(layout.run_id)}"
        jobs = []
        for name, window in plan.windows.items():
            for split in SPLITS:
                table = f"{layout.dag_id}__{layout.window.key}__{name or 'window'}_{split}".replace("-", "_").lower()
                parameters = [
                    {
                        "name": "window_start",
                        "parameterType": {"type": "STRING"},
                        "parameterValue": {"value": window.start.isoformat()},
                    },
                    {
                        "name": "window_end",
                        "parameterType": {"type": "STRING"},
                        "parameterValue": {"value": window.end.isoformat()},
                    },
                    {"name": "split", "parameterType": {"type": "STRING"}, "parameterValue": {"value": split}},
                ]
                jobs.append(
                    {
                        "window": name or "window",
                        "split": split,
                        "query": {
                            "job_id": f"{prefix}_{table}_query",
                            "configuration": {
                                "query": {
                                    "query": sql,
                                    "useLegacySql": False,
                                    "parameterMode": "NAMED",
                                    "queryParameters": parameters,
                                    "destinationTable": {
                                        "projectId": self.project_id,
                                        "datasetId": self.dataset,
                                        "tableId": table,
                                    },
                                    "writeDisposition": "WRITE_TRUNCATE",
                                    "createDisposition": "CREATE_IF_NEEDED",
                                }
                            },
                        },
                        "export": {
                            "job_id": f"{prefix}_{table}_export",
                            "source_project_dataset_table": f"{self.project_id}.{self.dataset}.{table}",
                            "destination_cloud_storage_uris": [f"{layout.split_dir(split, name)}/part-*.csv"],
                        },
                    }
                )
        return jobs

    def execute(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowException
        from google.api_core.exceptions import GoogleAPICallError

        from taxi_pipeline import files

        rows: dict[str, dict[str, int]] = {}
        # the labels BigQueryInsertJobOperator gives its jobs, on the exports too
        labels = {"airflow-dag": self.dag_id.lower(), "airflow-task": self.task_id.lower().replace(".", "-")}
        for job in self.jobs(context):
            common = {
                "project_id": self.project_id,
                "location": self.location,
                "gcp_conn_id": self.gcp_conn_id,
                "force_rerun": False,
            }
            table = job["export"]["source_project_dataset_table"]
            part_files = job["export"]["destination_cloud_storage_uris"][0]
            # durable=False: the provider's durable mode keeps one job id per task in task_state_store,
            # and this task runs eight jobs; the deterministic ids do the reattaching instead
            query = _ReattachingQuery(task_id=self.task_id, durable=False, **job["query"], **common)
            export = _ReattachingExport(
                task_id=self.task_id,
                export_format="CSV",
                print_header=True,
                before_new_job=lambda p=part_files: files.delete_tree(p.rsplit("/", 1)[0]),
                labels=labels,
                **job["export"],
                **common,
            )
            query.parent_dag_id = export.parent_dag_id = self.dag_id
            try:
                query.execute(context)
                export.execute(context)
            except (AirflowException, GoogleAPICallError) as error:
                raise AirflowException(
                    f"extract_window: the {job['window']} window's {job['split']} split failed in BigQuery "
                    f"(query into {table}, then export to {part_files}): {error}"
                ) from error
            count = query.hook.get_client(project_id=self.project_id, location=self.location).get_table(table).num_rows
            rows.setdefault(job["window"], {})[job["split"]] = count
            self.log.info("Window %s, %s split: %s rows -> %s", job["window"], job["split"], count, part_files)
        return rows


class _EarlierJobs:
    """Submission that looks for the job of an earlier try under the deterministic id first: a
    finished job is reused, a running one reattached to, a failed one replaced by `<id>_r<n>`.
    `parent_dag_id`: the DAG of the task that runs the operator (built outside the DAG, it would
    label its jobs `airflow-dag: adhoc_<owner>`)."""

    parent_dag_id: str | None = None

    @property
    def dag_id(self) -> str:
        return self.parent_dag_id or super().dag_id

    def _earlier_or_new(self, hook, job_id: str, submit, before_new_job=None):
        from google.api_core.exceptions import NotFound

        candidate, attempt = job_id, 0
        while True:
            try:
                job = hook.get_job(job_id=candidate, project_id=self.project_id, location=self.location)
            except NotFound:
                if before_new_job:
                    before_new_job()
                return submit(candidate)
            if job.state != "DONE":
                self.log.info("Reattaching to BigQuery job %s of an earlier try (%s)", candidate, job.state)
                return job
            if not job.error_result:
                self.log.info("BigQuery job %s of an earlier try is done: reused", candidate)
                return job
            attempt += 1
            self.log.info(
                "BigQuery job %s of an earlier try failed (%s): running it again as %s_r%s",
                candidate,
                job.error_result,
                job_id,
                attempt,
            )
            candidate = f"{job_id}_r{attempt}"


class _ReattachingQuery(_EarlierJobs, BigQueryInsertJobOperator):
    def _submit_job(self, hook, job_id):
        return self._earlier_or_new(hook, job_id, lambda i: super(_ReattachingQuery, self)._submit_job(hook, i))


class _ReattachingExport(_EarlierJobs, BigQueryToGCSOperator):
    def __init__(self, *, before_new_job=None, **kwargs):
        super().__init__(**kwargs)
        self.before_new_job = before_new_job

    def _submit_job(self, hook, job_id, configuration):
        return self._earlier_or_new(
            hook,
            job_id,
            lambda i: super(_ReattachingExport, self)._submit_job(hook, i, configuration),
            self.before_new_job,
        )


def vertex_model(display_name: str, artifact_uri: str, image: str, version: int, description: str) -> dict:
    """The Vertex AI Model of a served version (the prebuilt TF serving container reads the SavedModel)."""
    return {
        "display_name": display_name,
        "description": description,
        "artifact_uri": artifact_uri,
        "container_spec": {"image_uri": image},
        "version_aliases": [f"v{version}"],
        "labels": {"taxi-model": display_name.replace("_", "-"), "taxi-version": str(version)},
    }


class _VertexUpload(UploadModelOperator):
    """Upload the pushed version as a new version of the Vertex AI model named like the served model
    (parent_model: that model, once it exists); a retry finds its version by alias and reuses it."""

    def _existing(self, context, display_name: str, version: int) -> tuple[str | None, str | None]:
        from airflow.providers.google.cloud.hooks.vertex_ai.model_service import ModelServiceHook

        hook = ModelServiceHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)
        models = list(
            hook.list_models(project_id=self.project_id, region=self.region, filter=f'display_name="{display_name}"')
        )
        if not models:
            return None, None
        parent = models[0].name.rsplit("/", 1)[-1]  # the model's id: the hook makes its resource name
        for v in hook.list_model_versions(project_id=self.project_id, region=self.region, model_id=parent):
            if f"v{version}" in v.version_aliases:
                return parent, f"{v.name}@{v.version_id}"
        return parent, None

    def upload(self, context, display_name: str, artifact_uri: str, version: int, description: str) -> str:
        """Returns the uploaded (or already uploaded) model version's resource name."""
        parent, done = self._existing(context, display_name, version)
        if done:
            self.log.info("Vertex AI model %s already has version v%s: %s", display_name, version, done)
            context["ti"].xcom_push(key="model_id", value=parent)  # as the upload does
            VertexAIModelLink.persist(context=context, model_id=parent)
            return done
        self.model = vertex_model(
            display_name, artifact_uri, self.model["container_spec"]["image_uri"], version, description
        )
        self.parent_model = parent
        response = super().execute(context)
        return f"{response['model']}@{response.get('model_version_id', '')}".rstrip("@")


class VertexPushOperator(_VertexUpload):
    template_fields: Sequence[str] = tuple({*UploadModelOperator.template_fields, "serving_root"})

    def __init__(self, *, variant: str, served_model: str, serving_root: str, **kwargs):
        super().__init__(**kwargs)
        self.variant, self.served_model, self.serving_root = variant, served_model, serving_root

    def execute(self, context):
        from taxi_pipeline import deployment
        from taxi_pipeline.run_context import run_layout
        from taxi_pipeline.serving_root import ServingRoot

        root = ServingRoot(self.serving_root)
        with deployment.skip_if_not_deployed():
            result = deployment.push_blessed_variant(root, context, self.variant, self.served_model)
        artifact_uri = f"{root.base_path(self.served_model)}/{result.version}"
        layout = run_layout(context)
        return self.upload(
            context,
            self.served_model,
            artifact_uri,
            result.version,
            f"{self.variant} of window {layout.window} (run {layout.run_id})",
        )


class ChampionDeployOperator(_VertexUpload):
    template_fields: Sequence[str] = tuple(
        {
            *UploadModelOperator.template_fields,
            "serving_root",
            "deployment",
            "service",
            "network_policy",
            "endpoint_id",
            "deployed_model",
            "traffic_split",
            "gke",
        }
    )
    template_fields_renderers = {
        "deployment": "json",
        "service": "json",
        "network_policy": "json",
        "deployed_model": "json",
    }
    operator_extra_links = (VertexAIModelLink(), VertexAIEndpointLink())

    def __init__(
        self,
        *,
        serving_root: str,
        deployment: dict,
        service: dict,
        gke: dict,
        endpoint_id: str,
        deployed_model: dict,
        traffic_split: dict,
        network_policy: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.serving_root, self.deployment, self.service, self.gke = serving_root, deployment, service, gke
        self.network_policy = network_policy
        self.endpoint_id, self.deployed_model, self.traffic_split = endpoint_id, deployed_model, traffic_split

    def execute(self, context):
        from taxi_pipeline import deployment
        from taxi_pipeline.operators.tf_serving import TFServingDeployOperator
        from taxi_pipeline.run_context import run_layout
        from taxi_pipeline.serving_root import CHAMPION_MODEL, ServingRoot

        root = ServingRoot(self.serving_root)
        with deployment.skip_if_not_deployed():
            champion, result = deployment.promote_champion(root, context)
        window = run_layout(context).window

        TFServingDeployOperator(
            task_id=self.task_id,
            deployment=self.deployment,
            service=self.service,
            network_policy=self.network_policy,
            **self.gke,
        ).execute(context)

        model = self.upload(
            context,
            CHAMPION_MODEL,
            f"{root.base_path(CHAMPION_MODEL)}/{result.version}",
            result.version,
            f"champion {champion['variant']} of window {window}",
        )
        champion_id = self.deploy(context, model)
        self.undeploy_others(context, champion_id)
        return {
            "variant": champion["variant"],
            "version": result.version,
            "auc": champion["auc"],
            "vertex_model": model,
        }

    #: task_state_store key: the deployed model that had the traffic before this task's deployment
    PREVIOUS_KEY = "vertex_previous_champion"

    def _vertex(self) -> dict:
        return {
            "project_id": self.project_id,
            "region": self.region,
            "gcp_conn_id": self.gcp_conn_id,
            "impersonation_chain": self.impersonation_chain,
        }

    def _endpoint_hook(self):
        from airflow.providers.google.cloud.hooks.vertex_ai.endpoint_service import EndpointServiceHook

        return EndpointServiceHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)

    @staticmethod
    def _version(deployed) -> str:
        """A deployed model's model version, `<model>@<version id>`."""
        name = deployed.model.split("@")[0]
        return f"{name}@{deployed.model_version_id}" if deployed.model_version_id else deployed.model

    def deploy(self, context, model: str) -> str:
        """Deploy `model` (a version's resource name, `<model>@<version id>`) to the endpoint with the
        traffic split, creating the endpoint if it does not exist. Nothing is deployed when the
        version is already deployed there with all the traffic (a retry after the deployment).
        Before a deployment, the deployed model with the most traffic (the previous champion; None
        when none has traffic) is kept in task_state_store for `undeploy_others`.
        Returns the id of the deployed model that serves `model` with all the traffic."""
        from airflow.providers.google.cloud.operators.vertex_ai.endpoint_service import (
            CreateEndpointOperator,
            DeployModelOperator,
            UpdateEndpointOperator,
        )
        from google.api_core.exceptions import AlreadyExists, NotFound

        from taxi_pipeline.serving_root import CHAMPION_MODEL

        vertex = self._vertex()
        hook = self._endpoint_hook()
        try:
            endpoint = hook.get_endpoint(project_id=self.project_id, region=self.region, endpoint=self.endpoint_id)
        except NotFound:
            endpoint = None
        if endpoint is None:
            try:
                CreateEndpointOperator(
                    task_id=self.task_id,
                    endpoint={"display_name": CHAMPION_MODEL},
                    endpoint_id=self.endpoint_id,
                    **vertex,
                ).execute(context)
            except AlreadyExists:  # created meanwhile by another run
                endpoint = hook.get_endpoint(project_id=self.project_id, region=self.region, endpoint=self.endpoint_id)
        if endpoint is not None:
            self.log.info("Vertex AI endpoint %s exists", self.endpoint_id)
            context["ti"].xcom_push(key="endpoint_id", value=self.endpoint_id)  # as the creation does
            VertexAIEndpointLink.persist(context=context, endpoint_id=self.endpoint_id)

        model_name, _, version_id = model.partition("@")
        deployed = [
            d
            for d in (endpoint.deployed_models if endpoint is not None else [])
            if d.model == model or (d.model.split("@")[0] == model_name and d.model_version_id == version_id)
        ]
        serving_all = [d for d in deployed if endpoint.traffic_split.get(d.id, 0) == 100]
        if serving_all:
            self.log.info(
                "%s is already deployed to endpoint %s with all the traffic (deployed model %s)",
                model,
                self.endpoint_id,
                serving_all[0].id,
            )
            context["ti"].xcom_push(key="deployed_model_id", value=serving_all[0].id)
            champion_id = serving_all[0].id
        else:
            traffic = dict(endpoint.traffic_split) if endpoint is not None else {}
            serving = [
                d for d in (endpoint.deployed_models if endpoint is not None else []) if traffic.get(d.id, 0) > 0
            ]
            previous = max(serving, key=lambda d: (traffic[d.id], d.id), default=None)
            store = context.get("task_state_store")
            if store is not None:  # before the deployment: a retry after it can no longer tell
                store.set(
                    self.PREVIOUS_KEY,
                    {
                        "deployed_model_id": previous.id if previous else None,
                        "model_version": self._version(previous) if previous else None,
                    },
                )
            self.log.info(
                "Previous champion on endpoint %s: %s",
                self.endpoint_id,
                f"deployed model {previous.id} ({self._version(previous)}, {traffic[previous.id]}% of the traffic)"
                if previous
                else "none (no deployed model has traffic)",
            )
            if deployed:  # deployed at less than all the traffic (a rollback's target): a traffic switch
                champion_id = deployed[0].id
                UpdateEndpointOperator(
                    task_id=self.task_id,
                    endpoint_id=self.endpoint_id,
                    endpoint={"traffic_split": {champion_id: 100}},
                    update_mask={"paths": ["traffic_split"]},
                    **vertex,
                ).execute(context)
                self.log.info(
                    "Endpoint %s: all the traffic to deployed model %s (%s)", self.endpoint_id, champion_id, model
                )
            else:
                response = DeployModelOperator(
                    task_id=self.task_id,
                    endpoint_id=self.endpoint_id,
                    deployed_model={**self.deployed_model, "model": model},
                    traffic_split=self.traffic_split,
                    **vertex,
                ).execute(context)
                champion_id = response["deployed_model"]["id"]
        # (DeployModelOperator files its deployed model's id under the model link: the link is the model's)
        VertexAIModelLink.persist(context=context, model_id=model_name.rsplit("/", 1)[-1])
        return champion_id

    def undeploy_others(self, context, champion_id: str) -> None:
        """Undeploy every deployed model of the endpoint but the champion (`champion_id`) and the
        previous champion (from task_state_store), never one that has traffic. Read from the
        endpoint each time: a retry after a partial undeploy undeploys the rest, a rerun nothing."""
        from airflow.providers.google.cloud.operators.vertex_ai.endpoint_service import UndeployModelOperator
        from google.api_core.exceptions import NotFound

        store = context.get("task_state_store")
        stored = store.get(self.PREVIOUS_KEY) if store is not None else None
        endpoint = self._endpoint_hook().get_endpoint(
            project_id=self.project_id, region=self.region, endpoint=self.endpoint_id
        )
        traffic = dict(endpoint.traffic_split)
        others = [d for d in endpoint.deployed_models if d.id != champion_id]
        if stored is None:
            if others:
                self.log.warning(
                    "The previous champion of endpoint %s is not known (no task_state_store entry %r): nothing "
                    "undeployed; left deployed: %s",
                    self.endpoint_id,
                    self.PREVIOUS_KEY,
                    ", ".join(f"{d.id} ({self._version(d)})" for d in others),
                )
            return
        previous_id = stored["deployed_model_id"]
        undeployed = 0
        for d in others:
            if d.id == previous_id:
                self.log.info(
                    "Kept deployed model %s (%s) at %s%% of the traffic: the previous champion (rollback: "
                    "a traffic switch)",
                    d.id,
                    self._version(d),
                    traffic.get(d.id, 0),
                )
                continue
            if traffic.get(d.id, 0) > 0:
                self.log.warning(
                    "Kept deployed model %s (%s): it has %s%% of the traffic", d.id, self._version(d), traffic[d.id]
                )
                continue
            why = (
                f"0% traffic, neither the champion ({champion_id}) nor the previous champion "
                f"({previous_id or 'none: no deployed model had traffic before the deployment'})"
            )
            try:
                UndeployModelOperator(
                    task_id=self.task_id, endpoint_id=self.endpoint_id, deployed_model_id=d.id, **self._vertex()
                ).execute(context)
            except NotFound:  # undeployed meanwhile (an operation of an earlier try)
                self.log.info("Deployed model %s (%s) was already undeployed", d.id, self._version(d))
                continue
            undeployed += 1
            self.log.info(
                "Undeployed deployed model %s (model version %s) from endpoint %s: %s",
                d.id,
                self._version(d),
                self.endpoint_id,
                why,
            )
        self.log.info(
            "Endpoint %s: %s deployed model(s) undeployed, %s kept",
            self.endpoint_id,
            undeployed,
            len(endpoint.deployed_models) - undeployed,
        )


class ServingRollbackOperator(ChampionDeployOperator):
    """The gcp platform's `roll_back`: the serving root in GCS is rolled back as locally (labels,
    models.config, newer versions retired: TF-Serving on GKE follows its config), then, for the
    champion model `taxi`, the Vertex AI endpoint serves the target version again: all the traffic
    moves to its deployed model (the previous champion stays deployed at 0% for this), or, when it
    is no longer deployed, it is deployed with all the traffic. Nothing is undeployed (the version
    rolled back from stays deployed, so a roll-forward is a traffic switch too). A rerun changes
    nothing: the serving root is already there and the target already has all the traffic."""

    def execute(self, context):
        from dataclasses import asdict

        from airflow.sdk.exceptions import AirflowFailException

        from taxi_pipeline import deployment
        from taxi_pipeline.serving_root import CHAMPION_MODEL, ServingRoot

        result = deployment.roll_back(ServingRoot(self.serving_root), context["params"], context["run_id"])
        outcome = asdict(result)
        if result.model == CHAMPION_MODEL:
            _, model = self._existing(context, CHAMPION_MODEL, result.to_version)
            if model is None:
                raise AirflowFailException(
                    f"The serving root serves {CHAMPION_MODEL} version {result.to_version} again, but Vertex AI has no "
                    f"version v{result.to_version} of the model {CHAMPION_MODEL}: the endpoint {self.endpoint_id} was "
                    "left as it was"
                )
            outcome["vertex_deployed_model"] = self.deploy(context, model)
        return outcome
