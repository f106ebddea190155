"""The gcp platform: the same stages from the providers' operators (BigQuery, GCS, Dataflow, GKE for
the TFJob, the runtime pods and TF-Serving, Vertex AI)."""

from __future__ import annotations

from taxi_pipeline import assets
from taxi_pipeline.branches import Branch
from taxi_pipeline.platforms import (
    Platform,
    check_export_arguments,
    compare_windows_arguments,
    evaluate_arguments,
    score_options,
    train_arguments,
    transform_options,
)
from taxi_pipeline.platforms.artifact_urls import GcpLinks
from taxi_pipeline.platforms.docs import (
    CHECK_EXPORT_DOC,
    EVALUATE_DOC,
    EXPORT_PREDICTIONS_DOC,
    EXTRACT_DOC,
    GCP_EXTRACT_DOC,
    GCP_LOAD_PREDICTIONS_DOC,
    GCP_PROMOTE_DOC,
    GCP_PUSH_DOC,
    GCP_ROLLBACK_DOC,
    GCP_WAIT_DOC,
    LOAD_PREDICTIONS_DOC,
    PROMOTE_DOC,
    PUSH_DOC,
    ROLLBACK_DOC,
    SCORE_DOC,
    TRAIN_DOC,
    TRANSFORM_DOC,
    WAIT_DOC,
    WAIT_FOR_SCORES_DOC,
    WINDOW_COMPARISON_DOC,
)
from taxi_pipeline.pools import DEPLOY_POOL, HEAVY_POOL
from taxi_pipeline.settings import get_settings


class GcpPlatform(Platform):
    """The same stages from the providers' operators: BigQuery, GCS, Dataflow, GKE (TFJob, TF-Serving),
    Vertex AI. Settings: taxi_pipeline.gcp_settings (README, "The gcp platform")."""

    name = "gcp"
    links = GcpLinks()

    def __init__(self):
        # templates (no Variable asked while parsing): every use below is in a templated field
        from taxi_pipeline.gcp_settings import gcp_templates

        self.gcp = gcp_templates()

    # job and object names: deterministic per DAG, window and branch (a retry or rerun reuses them)
    @staticmethod
    def _name(*parts: str) -> str:
        return (
            "{{ ((dag.dag_id | replace('taxi_', '', 1)) ~ '-' ~ taxi_run().window.key ~ '-"
            + "-".join(parts)
            + "') | lower | replace('_', '-') }}"
        )

    def _gke(self) -> dict:
        g = self.gcp
        return {
            "project_id": g.project,
            "location": g.gke_location,
            "cluster_name": g.gke_cluster,
            "gcp_conn_id": g.conn_id,
        }

    def _partition_sensor(self, task_id: str, table: str, partition_id: str, hours: int, doc_md: str, inlet):
        """Waits (deferred, holding no worker slot) until a partition of a BigQuery table exists."""
        from airflow.providers.google.cloud.sensors.bigquery import BigQueryTablePartitionExistenceSensor

        from taxi_pipeline.gcp_settings import dotted_part

        project, dataset, table_id = (dotted_part(table, i) for i in range(3))
        return BigQueryTablePartitionExistenceSensor(
            task_id=task_id,
            project_id=project,
            dataset_id=dataset,
            table_id=table_id,
            partition_id=partition_id,
            gcp_conn_id=self.gcp.conn_id,
            deferrable=True,
            poke_interval=300,
            timeout=hours * 3600,
            doc_md=doc_md,
            inlets=[inlet],
        )

    def wait_for_window(self):
        # the hourly partition of the window's last hour
        last_hour = "{{ (taxi_run().window.end - macros.timedelta(hours=1)).strftime('%Y%m%d%H') }}"
        return self._partition_sensor(
            "wait_for_window", self.gcp.source_table, last_hour, 6, WAIT_DOC + GCP_WAIT_DOC, assets.trips()
        )

    def extract_window(self, dag_id: str):
        from taxi_pipeline.operators.gcp import WindowExtractOperator

        return WindowExtractOperator(
            task_id="extract_window",
            project_id=self.gcp.project,
            location=self.gcp.bq_location,
            dataset=self.gcp.extract_dataset,
            source_table=self.gcp.source_table,
            gcp_conn_id=self.gcp.conn_id,
            doc_md=EXTRACT_DOC + GCP_EXTRACT_DOC,
            outlets=[assets.window_extract(dag_id)],
        )

    def _day_partition(self) -> str:
        return "{{ taxi_run().window.start.strftime('%Y%m%d') }}"

    def wait_for_scores(self):
        return self._partition_sensor(
            "wait_for_scores",
            self.gcp.predictions_table,
            self._day_partition(),
            12,
            WAIT_FOR_SCORES_DOC,
            assets.predictions(),
        )

    def export_predictions(self):
        from airflow.providers.google.cloud.transfers.bigquery_to_gcs import BigQueryToGCSOperator

        return BigQueryToGCSOperator(
            task_id="export_predictions",
            source_project_dataset_table=self.gcp.predictions_table + "$" + self._day_partition(),
            destination_cloud_storage_uris=["{{ taxi_run().predictions_dir }}/part-*.csv"],
            export_format="CSV",
            print_header=True,
            gcp_conn_id=self.gcp.conn_id,
            doc_md=EXPORT_PREDICTIONS_DOC,
        )

    def _beam_pipeline(self, task_id: str, module: str, options: dict, group: str, doc_md: str):
        """A Dataflow job of a runtime module; `group` (a branch's name) names the job and labels it."""
        from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

        from taxi_pipeline.operators.gcp import TemplatedDataflowConfiguration as DataflowConfiguration

        g = self.gcp
        return BeamRunPythonPipelineOperator(
            task_id=task_id,
            runner="DataflowRunner",
            py_file=module,
            py_options=["-m"],
            py_interpreter=get_settings().runtime_python,
            doc_md=doc_md,
            pool=HEAVY_POOL,
            pipeline_options={
                **options,
                "temp_location": g.dataflow_temp,
                "staging_location": g.dataflow_staging,
                "sdk_container_image": g.runtime_image,
                "sdk_location": "container",
                "experiments": ["use_runner_v2"],
                "labels": {"taxi-dag": "{{ dag.dag_id | replace('_', '-') }}", "taxi-branch": group},
            },
            dataflow_config=DataflowConfiguration(
                job_name=self._name(group, task_id),
                append_job_name=False,
                project_id=g.project,
                location=g.region,
                gcp_conn_id=g.conn_id,
                service_account=g.service_account,
                wait_until_finished=True,
                max_num_workers=10,
            ),
            gcp_conn_id=g.conn_id,
        )

    def transform(self, branch: Branch):
        return self._beam_pipeline(
            "transform", "taxi_model.transform", transform_options(branch), branch.name, TRANSFORM_DOC
        )

    def train(self, branch: Branch):
        from taxi_pipeline.k8s import WORKERS_TEMPLATE, tfjob, tfjob_yaml
        from taxi_pipeline.operators.tfjob import TFJobTrainOperator

        g = self.gcp
        manifest = tfjob(
            name=self._name(branch.name),
            namespace=g.namespace,
            image=g.runtime_image,
            service_account=g.k8s_service_account,
            workers=WORKERS_TEMPLATE,
            labels={"app.kubernetes.io/part-of": "taxi-mlops", "taxi-branch": branch.name},
            arguments=train_arguments(branch),
        )
        # JSON is YAML, and leaves the templates' quotes alone; the Worker replicas render as an integer
        yaml_conf = tfjob_yaml(manifest)
        # (its namespace is the manifest's metadata.namespace, rendered with the rest)
        return TFJobTrainOperator(
            task_id="train", yaml_conf=yaml_conf, doc_md=TRAIN_DOC, pool=HEAVY_POOL, **self._gke()
        )

    def evaluate(self, branch: Branch):
        arguments = evaluate_arguments(branch, self.gcp.serving_root)
        return self._runtime_pod("evaluate", "taxi_model.evaluate", arguments, EVALUATE_DOC, pool=HEAVY_POOL)

    def score_trips(self):
        return self._beam_pipeline("score_trips", "taxi_model.batch_score", score_options(), "day", SCORE_DOC)

    def load_predictions(self):
        """A load job into the day's partition (WRITE_TRUNCATE: a rerun replaces the day, nothing else)."""
        from airflow.providers.google.cloud.transfers.gcs_to_bigquery import GCSToBigQueryOperator

        from taxi_pipeline.predictions import SCORE_FILES, bigquery_schema

        scores = "taxi_run().scores_dir"
        return GCSToBigQueryOperator(
            task_id="load_predictions",
            bucket="{{ " + scores + ".split('/')[2] }}",
            source_objects=["{{ " + scores + ".split('/', 3)[3] }}/" + SCORE_FILES],
            # the day's partition: `<table>$YYYYMMDD`
            destination_project_dataset_table=self.gcp.predictions_table + "$" + self._day_partition(),
            schema_fields=bigquery_schema(),
            source_format="CSV",
            skip_leading_rows=1,
            write_disposition="WRITE_TRUNCATE",
            create_disposition="CREATE_IF_NEEDED",
            time_partitioning={"type": "DAY", "field": "day"},
            # no project_id or location: not templated here; the table's name and dataset give them
            gcp_conn_id=self.gcp.conn_id,
            doc_md=LOAD_PREDICTIONS_DOC + GCP_LOAD_PREDICTIONS_DOC,
            outlets=[assets.predictions()],
        )

    def _runtime_pod(self, task_id: str, module: str, arguments: list[str], doc_md: str, **kwargs):
        from kubernetes.client import models as k8s

        from taxi_pipeline.k8s import RUNTIME_UID, TMP_SIZE_LIMIT, security_context
        from taxi_pipeline.operators.gcp import RuntimePodOperator

        g = self.gcp
        return RuntimePodOperator(
            task_id=task_id,
            name=f"taxi-{task_id.replace('_', '-')}",
            namespace=g.namespace,
            image=g.runtime_image,
            cmds=["python", "-m", module],
            arguments=arguments,
            service_account_name=g.k8s_service_account,
            env_vars={"HOME": "/tmp", "TF_USE_LEGACY_KERAS": "1"},
            container_resources=k8s.V1ResourceRequirements(
                requests={"cpu": "1", "memory": "2Gi"}, limits={"cpu": "2", "memory": "4Gi"}
            ),
            security_context={
                "runAsNonRoot": True,
                "runAsUser": RUNTIME_UID,
                "fsGroup": RUNTIME_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            container_security_context=security_context(RUNTIME_UID),
            volumes=[k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=TMP_SIZE_LIMIT))],
            automount_service_account_token=False,  # the step talks to GCS, never to the cluster
            volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
            termination_message_policy="FallbackToLogsOnError",  # the error of a failed step quotes its last lines
            get_logs=True,
            on_finish_action="delete_pod",
            doc_md=doc_md,
            **self._gke(),
            **kwargs,
        )

    def compare_windows(self, recent: Branch, long: Branch):
        return self._runtime_pod(
            "compare_windows",
            "taxi_model.window_comparison",
            doc_md=WINDOW_COMPARISON_DOC,
            pool=HEAVY_POOL,
            trigger_rule="none_failed",  # after the pushes, a skipped one (not blessed) included
            arguments=compare_windows_arguments(recent, long),
        )

    def check_export(self, branch: Branch):
        return self._runtime_pod(
            "check_export", "taxi_model.export_check", doc_md=CHECK_EXPORT_DOC, arguments=check_export_arguments(branch)
        )

    def _vertex(self) -> dict:
        return {
            "project_id": self.gcp.project,
            "region": self.gcp.region,
            "gcp_conn_id": self.gcp.conn_id,
            "model": {"container_spec": {"image_uri": self.gcp.vertex_serving_image}},
        }

    def push(self, branch: Branch):
        from taxi_pipeline.operators.gcp import VertexPushOperator

        return VertexPushOperator(
            task_id="push",
            variant=branch.name,
            served_model=branch.pushed_as,
            serving_root=self.gcp.serving_root,
            doc_md=PUSH_DOC + GCP_PUSH_DOC,
            pool=DEPLOY_POOL,
            outlets=[assets.served_model(branch.pushed_as)],
            **self._vertex(),
        )

    def _champion_endpoint(self) -> dict:
        """What a champion deployment needs: the serving root, TF-Serving's Deployment and Service on
        GKE, and the Vertex AI endpoint with the deployed model's resources."""
        from taxi_pipeline.k8s import tf_serving_deployment, tf_serving_network_policy, tf_serving_service
        from taxi_pipeline.serving_root import CHAMPION_MODEL

        g = self.gcp
        return dict(
            serving_root=g.serving_root,
            deployment=tf_serving_deployment(
                namespace=g.namespace,
                image=g.serving_image,
                models_config=f"{g.serving_root}/models.config",
                service_account=g.k8s_service_account,
                ready_model=CHAMPION_MODEL,
            ),
            service=tf_serving_service(namespace=g.namespace),
            network_policy=tf_serving_network_policy(namespace=g.namespace),
            gke={**self._gke(), "namespace": g.namespace},
            endpoint_id=g.endpoint_id,
            deployed_model={
                "display_name": CHAMPION_MODEL,
                "dedicated_resources": {
                    "machine_spec": {"machine_type": "n1-standard-2"},
                    "min_replica_count": 1,
                    "max_replica_count": 3,
                },
            },
            traffic_split={"0": 100},  # the new deployment ("0") takes all the traffic
            **self._vertex(),
        )

    def promote_champion(self):
        from taxi_pipeline.operators.gcp import ChampionDeployOperator
        from taxi_pipeline.serving_root import CHAMPION_MODEL

        return ChampionDeployOperator(
            task_id="promote_champion",
            trigger_rule="none_failed",
            doc_md=PROMOTE_DOC + GCP_PROMOTE_DOC,
            pool=DEPLOY_POOL,
            outlets=[assets.served_model(CHAMPION_MODEL)],
            **self._champion_endpoint(),
        )

    def roll_back(self):
        from taxi_pipeline.operators.gcp import ServingRollbackOperator

        return ServingRollbackOperator(
            task_id="roll_back", doc_md=ROLLBACK_DOC + GCP_ROLLBACK_DOC, pool=DEPLOY_POOL, **self._champion_endpoint()
        )
