"""The one place where the platforms differ: each builds the same stages from its own operators.

`local` (the default) runs on this machine: DuckDB for BigQuery, a local folder for GCS, Beam's
direct runner (its FnApiRunner engine) for Dataflow, local processes for the TFJob. `gcp` uses the providers' operators.
DAG files call `get_platform()` and the stage builders; the DAG's shape does not depend on it.
"""
from __future__ import annotations

from taxi_pipeline.branches import Branch, run_path
from taxi_pipeline.links import GcpLinks, LocalLinks
from taxi_pipeline.pools import DEPLOY_POOL, HEAVY_POOL
from taxi_pipeline.settings import REPO_ROOT, get_settings

RUNTIME_SOURCES = REPO_ROOT / "include" / "taxi_model"


# The command lines of the runtime modules: the same on both platforms (local processes or pods).
def train_arguments(branch: Branch) -> list[str]:
    return ["--transform_output", branch.path("transform_dir"),
            "--serving_model_dir", branch.path("model_dir"),
            "--log_dir", branch.path("logs_dir"),
            "--train_steps", "{{ params.train_steps }}",
            "--eval_steps", "{{ params.eval_steps }}"]


def transform_options(branch: Branch) -> dict[str, str]:
    return {"train": branch.split_glob("train"), "eval": branch.split_glob("eval"),
            "variant": branch.variant, "output": branch.path("transform_dir")}


def check_export_arguments(branch: Branch) -> list[str]:
    return ["--model", branch.path("model_dir"), "--eval", branch.eval_glob,
            "--output", branch.path("export_check_dir"), "--variant", branch.name]


def compare_windows_arguments(recent: Branch, long: Branch) -> list[str]:
    return ["--recent_model", recent.path("model_dir"), "--long_model", long.path("model_dir"),
            "--eval", recent.eval_glob,
            "--recent_evaluation", recent.path("evaluation_dir"),
            "--long_evaluation", long.path("evaluation_dir"),
            "--output", run_path("window_comparison_dir")]

WAIT_DOC = """
### wait_for_window
Waits until the warehouse holds trips up to the end of this run's training window (a trip at or
after the window's end has landed). Reschedules itself every 5 minutes, for up to 6 hours.

**On failure** (timeout): the message says how far the trips table has landed. Check the ingestion
into the trips table; once the data is there, clear this task.
"""
EXTRACT_DOC = """
### extract_window
Runs the window SQL (`include/taxi_pipeline/sql/window.sql`) for the train and eval splits of the
window, and for the previous window (the drift reference), and publishes them atomically under
`.../window=<window>/run=<run>/data/`. Returns the row count of each split.

**On failure**: the warehouse could not be read or the query failed; the log has the SQL error.
It is safe to retry: a retry rewrites the same files.
"""
VALIDATE_DOC = """
### validate_window
Checks the extracted window with great-expectations: columns and types, non-negative fares, tips,
miles and durations, Chicago coordinates, null fractions, unique keys, a minimum row count, and
drift of fare, miles and duration against the previous window.

**On failure**: the window's data is bad and nothing downstream runs (the served model is left
alone). The log lists each problem on one line; the full report is `validation/summary.txt` and
GX's Data Docs `validation/data_docs/index.html` in the run's artifacts. Fix the data at the
source, then clear this task; retrying without a fix fails the same way.
"""
TRANSFORM_DOC = """
### transform
TensorFlow Transform on Beam for this variant: analyzes the window's train split only (vocabularies,
z-scores, quantile buckets) and transforms both splits into gzipped TFRecords, written with the
transform graph under `variants/<variant>/transform/` (atomically).

**On failure**: read the Beam pipeline's output in this log. A retry rewrites the same output.
"""
TRAIN_DOC = """
### train
Trains the wide-and-deep Keras model (`include/taxi_model/trainer.py`, `run_fn`) on the transformed
train split for `train_steps` steps, and exports a SavedModel with `serving_default` (serialized
tf.Examples in, tip probability out; the TFT layer inside) and `transform_features` to
`variants/<variant>/model/`, with TensorBoard logs in `variants/<variant>/logs/`.

**On failure**: the trainer's output is in this log. A retry retrains from scratch into the same path.
"""
EVALUATE_DOC = """
### evaluate
TFMA on Beam: evaluates the candidate on the raw eval split (overall, by hour, by company, by
day x month) against the model in service for this variant: its newest version older than this
run's own, so a rerun is never judged against itself, nor an old window against a later model.
Blesses it or not: AUC above a floor, accuracy above the majority-class rate, and AUC not worse
than the served model's. Writes
`variants/<variant>/evaluation/` (TFMA output, metrics.json, blessing.json).

**On failure**: the evaluation itself broke (not a verdict: an unblessed model is a success of
this task, and the log says why it was not blessed in one line each).
"""
PUSH_DOC = """
### push
Pushes this variant's model, if it was blessed, as a new version of the served model
`taxi_<variant>` (TF-Serving's `<serving_root>/<model>/<version>/` layout; the version is the
run's data interval end, YYYYMMDDHHMM), atomically, with a deployment record beside it.

**Skipped** when the model was not blessed (the log says why) or when a newer window's model is
already served (a backfill never pushes an old model over a newer one). A retry rewrites the same
version in place.
"""
CHECK_EXPORT_DOC = """
### check_export
Is the exported model servable? Loads the SavedModel on its own, as the server does, and calls
`serving_default` on serialized raw tf.Examples of real eval rows: the export must load, answer
probabilities (finite, in [0, 1]) that are not constant, with a mean near the eval rows' rate of
big tippers (not skewed). Writes `variants/<variant>/export_check/report.json`.

**An unservable export** is a verdict, not a failure of this task: the log says why in one line
each, and `push` is skipped with the same reasons (the served model stays). It means the trainer's
export is broken: look at the train log of this run. **On failure**: the check itself could not run.
"""
PROMOTE_DOC = """
### promote_champion
The champion is the blessed variant with the best AUC. Its model is pushed as a new version of the
model `taxi`, and the `stable` label (what clients should use) moves to it; `models.config` (TF-Serving's
model config, with the labels) is rewritten.

**Skipped** when no variant was blessed: the served model stays as it was.
"""
COMPARE_DOC = """
### compare_variants
One table of the variants of this run: rows, AUC, accuracy, blessed, why. Written to the run's
`comparison.txt` and `comparison.json`.
"""


WINDOW_COMPARISON_DOC = """
### compare_windows
Workflow 2's question: does the model trained on the recent window beat the one trained on all
history, on the newest data? Per slice, both models' TFMA metrics and their difference, and a
verdict on the overall AUC difference with a paired bootstrap 95% interval (is it larger than its
noise?). Written to the run's `window_comparison/`.
"""
RECORD_VERDICT_DOC = """
### record_verdict
Adds this window's verdict to the DAG's history (one row per window, `history/<window>.json` and
`history/history.csv`), so a user can see over time whether recency matters. A rerun of the window
rewrites its own row.
"""


class LocalPlatform:
    name = "local"
    links = LocalLinks()  # where the UI's extra links point (taxi_pipeline.links)

    def wait_for_window(self):
        from taxi_plugins.sensors import WindowLandedSensor

        return WindowLandedSensor(task_id="wait_for_window", doc_md=WAIT_DOC)

    def extract_window(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.tasks import extract_window_to_artifacts

        return PythonOperator(task_id="extract_window", python_callable=extract_window_to_artifacts,
                              doc_md=EXTRACT_DOC)

    def validate_window(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.tasks import validate_window_artifacts

        return PythonOperator(task_id="validate_window", python_callable=validate_window_artifacts,
                              doc_md=VALIDATE_DOC)


    def _beam_pipeline(self, task_id: str, script: str, options: dict, doc_md: str):
        # Not the provider's BeamRunPythonPipelineOperator: importing it costs most of a parse (see the operator).
        from taxi_plugins.operators import LocalBeamPipelineOperator

        return LocalBeamPipelineOperator(
            # FnApiRunner: the direct runner's engine, without its attempt to download Prism.
            task_id=task_id, runner="FnApiRunner", py_file=str(RUNTIME_SOURCES / script),
            py_interpreter=get_settings().runtime_python, pipeline_options=options, doc_md=doc_md, pool=HEAVY_POOL)

    def transform(self, branch: Branch):
        return self._beam_pipeline("transform", "transform.py", transform_options(branch), TRANSFORM_DOC)

    def train(self, branch: Branch):
        from taxi_plugins.operators import RuntimeModuleOperator

        return RuntimeModuleOperator(task_id="train", module="taxi_model.trainer", doc_md=TRAIN_DOC, pool=HEAVY_POOL,
                                     arguments=train_arguments(branch))

    def evaluate(self, branch: Branch):
        from taxi_pipeline.serving import model_base_path

        serving_root = get_settings().serving_root
        return self._beam_pipeline("evaluate", "evaluate.py", {
            "model": branch.path("model_dir"),
            "serving_base_path": model_base_path(serving_root, branch.served_model) if branch.served_model else "",
            "baseline_before": "{{ taxi_version() }}",
            "eval": branch.eval_glob,
            "output": branch.path("evaluation_dir"),
            "variant": branch.name,
        }, EVALUATE_DOC)

    def compare_windows(self, recent: Branch, long: Branch):
        from taxi_plugins.operators import RuntimeModuleOperator

        return RuntimeModuleOperator(
            task_id="compare_windows", module="taxi_model.window_comparison", doc_md=WINDOW_COMPARISON_DOC,
            pool=HEAVY_POOL,
            arguments=compare_windows_arguments(recent, long))

    def record_verdict(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.tasks import record_window_verdict

        return PythonOperator(task_id="record_verdict", python_callable=record_window_verdict,
                              doc_md=RECORD_VERDICT_DOC)

    def check_export(self, branch: Branch):
        from taxi_plugins.operators import RuntimeModuleOperator

        return RuntimeModuleOperator(task_id="check_export", module="taxi_model.export_check", doc_md=CHECK_EXPORT_DOC,
                                     arguments=check_export_arguments(branch))

    def push(self, branch: Branch):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.tasks import push_variant

        return PythonOperator(task_id="push", python_callable=push_variant, op_kwargs={"variant": branch.name},
                              doc_md=PUSH_DOC, pool=DEPLOY_POOL)

    def promote_champion(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.tasks import promote_champion

        return PythonOperator(task_id="promote_champion", python_callable=promote_champion,
                              trigger_rule="none_failed", doc_md=PROMOTE_DOC, pool=DEPLOY_POOL)

    def compare_variants(self):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline.tasks import compare_variants

        return PythonOperator(task_id="compare_variants", python_callable=compare_variants,
                              trigger_rule="none_failed", doc_md=COMPARE_DOC)


GCP_WAIT_DOC = """
On the gcp platform: a deferrable BigQuery sensor on the hourly partition of the window's last
hour in the trips table (TAXI_GCP_SOURCE_TABLE). It holds no worker slot while it waits.
"""
GCP_EXTRACT_DOC = """
On the gcp platform each split is a BigQuery query job into a per-window table, then an export job
to the run's GCS folder. Job ids are derived from the run, so a retry reuses the jobs that finished,
reattaches to running ones and reruns a failed one under a new id; an export that runs again first
deletes its split's stale files. To re-extract a window whose data changed, rerun it (a new run).
"""
GCP_PUSH_DOC = """
On the gcp platform the version is copied to the model's GCS base path (saved_model.pb last,
then models.config names it: TF-Serving loads it after it is complete) and uploaded as a new
version of the Vertex AI model of the same name (alias `v<version>`; a retry reuses it).
"""
GCP_PROMOTE_DOC = """
On the gcp platform it also applies the `taxi-serving` tensorflow/serving Deployment and Service
(created or patched; it waits for the rollout) and deploys the champion's Vertex AI model version
to the endpoint with all the traffic. The task's links open the model and the endpoint in the console.
Then it undeploys every other deployed model of the endpoint (each holds at least one machine) but
the previous champion, the one that had the traffic before: it stays at 0%, so a rollback is a
traffic switch to it in the endpoint's console. Each undeployed model is one log line (deployed
model id, model version, why). A deployed model with traffic is never undeployed. A failed
undeploy fails the task: its retry undeploys the rest (the previous champion is remembered in the
task's state store); a rerun undeploys nothing more. If the log says the previous champion is not
known, nothing was undeployed: the next promotion cleans up, or undeploy the listed ones by hand.
"""


class GcpPlatform:
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
        return ("{{ ((dag.dag_id | replace('taxi_', '', 1)) ~ '-' ~ taxi_run().window.key ~ '-"
                + "-".join(parts) + "') | lower | replace('_', '-') }}")

    def _gke(self) -> dict:
        g = self.gcp
        return {"project_id": g.project, "location": g.gke_location, "cluster_name": g.gke_cluster,
                "gcp_conn_id": g.conn_id}

    def wait_for_window(self):
        from airflow.providers.google.cloud.sensors.bigquery import BigQueryTablePartitionExistenceSensor

        from taxi_pipeline.gcp_settings import dotted_part

        project, dataset, table = (dotted_part(self.gcp.source_table, i) for i in range(3))
        return BigQueryTablePartitionExistenceSensor(
            task_id="wait_for_window", project_id=project, dataset_id=dataset, table_id=table,
            # the hourly partition of the window's last hour
            partition_id="{{ (taxi_run().window.end - macros.timedelta(hours=1)).strftime('%Y%m%d%H') }}",
            gcp_conn_id=self.gcp.conn_id, deferrable=True, poke_interval=300, timeout=6 * 3600,
            doc_md=WAIT_DOC + GCP_WAIT_DOC)

    def extract_window(self):
        from taxi_plugins.gcp_operators import WindowExtractOperator

        return WindowExtractOperator(
            task_id="extract_window", project_id=self.gcp.project, location=self.gcp.bq_location,
            dataset=self.gcp.extract_dataset, source_table=self.gcp.source_table, gcp_conn_id=self.gcp.conn_id,
            doc_md=EXTRACT_DOC + GCP_EXTRACT_DOC)

    def _python(self, task_id: str, callable_name: str, doc_md: str, **kwargs):
        from airflow.providers.standard.operators.python import PythonOperator

        from taxi_pipeline import gcp_tasks

        return PythonOperator(task_id=task_id, python_callable=getattr(gcp_tasks, callable_name), doc_md=doc_md,
                              **kwargs)

    def validate_window(self):
        return self._python("validate_window", "validate_window", VALIDATE_DOC)

    def _beam_pipeline(self, task_id: str, script: str, options: dict, branch: Branch, doc_md: str):
        from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
        from taxi_plugins.gcp_operators import TemplatedDataflowConfiguration as DataflowConfiguration

        g = self.gcp
        return BeamRunPythonPipelineOperator(
            task_id=task_id, runner="DataflowRunner", py_file=str(RUNTIME_SOURCES / script),
            py_interpreter=get_settings().runtime_python, doc_md=doc_md, pool=HEAVY_POOL,
            pipeline_options={
                **options,
                "temp_location": g.dataflow_temp, "staging_location": g.dataflow_staging,
                "sdk_container_image": g.runtime_image, "sdk_location": "container",
                "experiments": ["use_runner_v2"], "labels": {"taxi-dag": "{{ dag.dag_id | replace('_', '-') }}",
                                                              "taxi-branch": branch.name},
            },
            dataflow_config=DataflowConfiguration(
                job_name=self._name(branch.name, task_id), append_job_name=False, project_id=g.project,
                location=g.region, gcp_conn_id=g.conn_id, service_account=g.service_account,
                wait_until_finished=True, max_num_workers=10),
            gcp_conn_id=g.conn_id)

    def transform(self, branch: Branch):
        return self._beam_pipeline("transform", "transform.py", transform_options(branch), branch, TRANSFORM_DOC)

    def train(self, branch: Branch):
        from taxi_plugins.tfjob import TFJobTrainOperator

        from taxi_pipeline.k8s import WORKERS_TEMPLATE, tfjob, tfjob_yaml

        g = self.gcp
        manifest = tfjob(
            name=self._name(branch.name), namespace=g.namespace, image=g.runtime_image,
            service_account=g.k8s_service_account, workers=WORKERS_TEMPLATE,
            labels={"app.kubernetes.io/part-of": "taxi-mlops", "taxi-branch": branch.name},
            arguments=train_arguments(branch))
        # JSON is YAML, and leaves the templates' quotes alone; the Worker replicas render as an integer
        yaml_conf = tfjob_yaml(manifest)
        # (its namespace is the manifest's metadata.namespace, rendered with the rest)
        return TFJobTrainOperator(task_id="train", yaml_conf=yaml_conf, doc_md=TRAIN_DOC,
                                  pool=HEAVY_POOL, **self._gke())

    def evaluate(self, branch: Branch):
        from taxi_pipeline.serving import model_base_path

        return self._beam_pipeline("evaluate", "evaluate.py", {
            "model": branch.path("model_dir"),
            "serving_base_path": model_base_path(self.gcp.serving_root, branch.served_model) if branch.served_model else "",
            "baseline_before": "{{ taxi_version() }}",
            "eval": branch.eval_glob,
            "output": branch.path("evaluation_dir"),
            "variant": branch.name,
        }, branch, EVALUATE_DOC)

    def _runtime_pod(self, task_id: str, module: str, arguments: list[str], doc_md: str, **kwargs):
        from kubernetes.client import models as k8s
        from taxi_plugins.gcp_operators import RuntimePodOperator

        from taxi_pipeline.k8s import RUNTIME_UID, security_context

        g = self.gcp
        return RuntimePodOperator(
            task_id=task_id, name=f"taxi-{task_id.replace('_', '-')}", namespace=g.namespace, image=g.runtime_image,
            cmds=["python", "-m", module], arguments=arguments, service_account_name=g.k8s_service_account,
            env_vars={"HOME": "/tmp", "TF_USE_LEGACY_KERAS": "1"},
            container_resources=k8s.V1ResourceRequirements(requests={"cpu": "1", "memory": "2Gi"},
                                                           limits={"cpu": "2", "memory": "4Gi"}),
            security_context={"runAsNonRoot": True, "runAsUser": RUNTIME_UID, "fsGroup": RUNTIME_UID,
                              "seccompProfile": {"type": "RuntimeDefault"}},
            container_security_context=security_context(RUNTIME_UID),
            volumes=[k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())],
            volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
            get_logs=True, on_finish_action="delete_pod", doc_md=doc_md, **self._gke(), **kwargs)

    def compare_windows(self, recent: Branch, long: Branch):
        return self._runtime_pod(
            "compare_windows", "taxi_model.window_comparison", doc_md=WINDOW_COMPARISON_DOC, pool=HEAVY_POOL,
            arguments=compare_windows_arguments(recent, long))

    def record_verdict(self):
        return self._python("record_verdict", "record_verdict", RECORD_VERDICT_DOC)

    def check_export(self, branch: Branch):
        return self._runtime_pod(
            "check_export", "taxi_model.export_check", doc_md=CHECK_EXPORT_DOC,
            arguments=check_export_arguments(branch))

    def _vertex(self) -> dict:
        return {"project_id": self.gcp.project, "region": self.gcp.region, "gcp_conn_id": self.gcp.conn_id,
                "model": {"container_spec": {"image_uri": self.gcp.vertex_serving_image}}}

    def push(self, branch: Branch):
        from taxi_plugins.gcp_operators import VertexPushOperator

        return VertexPushOperator(task_id="push", variant=branch.name, served_model=branch.served_model,
                                  serving_root=self.gcp.serving_root, doc_md=PUSH_DOC + GCP_PUSH_DOC,
                                  pool=DEPLOY_POOL, **self._vertex())

    def promote_champion(self):
        from taxi_plugins.gcp_operators import ChampionDeployOperator

        from taxi_pipeline.k8s import tf_serving_deployment, tf_serving_service
        from taxi_pipeline.serving import CHAMPION_MODEL

        g = self.gcp
        return ChampionDeployOperator(
            task_id="promote_champion", trigger_rule="none_failed", doc_md=PROMOTE_DOC + GCP_PROMOTE_DOC,
            pool=DEPLOY_POOL, serving_root=g.serving_root,
            deployment=tf_serving_deployment(namespace=g.namespace, image=g.serving_image,
                                             models_config=f"{g.serving_root}/models.config",
                                             service_account=g.k8s_service_account, ready_model=CHAMPION_MODEL),
            service=tf_serving_service(namespace=g.namespace),
            gke={**self._gke(), "namespace": g.namespace},
            endpoint_id=g.endpoint_id,
            deployed_model={"display_name": CHAMPION_MODEL,
                            "dedicated_resources": {"machine_spec": {"machine_type": "n1-standard-2"},
                                                    "min_replica_count": 1, "max_replica_count": 3}},
            traffic_split={"0": 100},  # the new deployment ("0") takes all the traffic
            **self._vertex())

    def compare_variants(self):
        return self._python("compare_variants", "compare_variants", COMPARE_DOC, trigger_rule="none_failed")


def get_platform():
    return {"local": LocalPlatform, "gcp": GcpPlatform}[get_settings().platform]()
