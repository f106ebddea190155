"""The task docs on-call reads (each task's doc_md in the UI): what the task does, what its failure
means and what to do. The stage builders of both platforms use them; a gcp doc adds what differs there."""

WAIT_DOC = """
### wait_for_window
Waits until the warehouse holds trips up to the end of this run's training window (a trip at or
after the window's end has landed). It checks once, then defers to the triggerer (the task shows
as deferred and holds no worker slot), which looks again as soon as the warehouse changes and
every 5 minutes at the latest, for up to 6 hours.

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
Checks the extracted window against the DAG's data schema (learned from the first run's data,
versioned under `artifacts/<dag>/schema/`): types, presence, ranges, categorical domains; drift
against the previous window (categorical L-infinity, numeric Jensen-Shannon, null shares, the
label's base rate, month by month) and skew between its train and eval splits. Then the fixed
great-expectations checks: columns and types, non-negative fares, tips, miles and durations, Chicago
coordinates, null fractions, unique keys, a minimum row count, and KL drift of fare, miles and
duration.

**On failure**: the window's data is bad and nothing downstream runs (the served model is left
alone). The log lists each problem on one line; the full report is `validation/summary.txt` and
GX's Data Docs `validation/data_docs/index.html` in the run's artifacts. Fix the data at the
source, then clear this task; retrying without a fix fails the same way. If the data changed for a
reason (a new company, a new payment type), run the DAG by hand on that window with the
`accept_data_changes` Param set to the reason: it writes the next schema version and goes on.
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
tf.Examples in, tip probability out; the TFT layer inside), `classification` (TF-Serving's
Classify: classes "0"/"1", scores 1 - p and p) and `transform_features` to
`variants/<variant>/model/`, with TF-Serving's warmup requests (the first raw eval rows) in its
`assets.extra/` and TensorBoard logs in `variants/<variant>/logs/`.

**On failure**: the trainer's output is in this log. A retry retrains from scratch into the same path.
"""
EVALUATE_DOC = """
### evaluate
TFMA's metrics of the candidate on the raw eval split (overall, by hour, by company, by
day x month), summed per slice with NumPy from both models' predictions, against the model in
service for this variant: its newest version older than this
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
The champion is the blessed variant with the best AUC (taxi_sliding_window: the run's candidate, when
it was offered). Its model is pushed as a new version of the model `taxi`, and the `stable` label
(what clients should use) moves to it; `models.config` (TF-Serving's model config, with the labels) is
rewritten. A sliding window's winner is recorded with its verdict, as version window end + 1 minute
(a daily run's version ends at the same midnight; one DAG never replaces another's version).

**Skipped** when no variant was blessed or offered, or a person rejected it: the served model stays as it was.
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
noise?). Then the run's candidate (the winner; with no significant difference, the higher AUC) is
compared the same way with the model served at `taxi:stable` (`versus_stable.json`): only a candidate
significantly better than it (or with nothing served) is offered for promotion. Written to the run's
`window_comparison/`.
"""
RECORD_VERDICT_DOC = """
### record_verdict
Adds this window's verdict to the DAG's history (one row per window, `history/<window>.json` and
`history/history.csv`), so a user can see over time whether recency matters. A rerun of the window
rewrites its own row. Writes the run's promotion table (`comparison.txt`, `comparison.json`): the
candidate, and why the other is not (the approval gate shows it).
"""

ROLLBACK_DOC = """
### roll_back
Makes the target version the one the model serves: retires newer versions, moves the labels,
rewrites `models.config` and records the rollback (the "Served model" link shows the result).

**On failure**: the log says why in one line (no such model or version, nothing older to go back
to); nothing was changed. Trigger again with a valid target.
"""


# --- what differs on the gcp platform ---

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
GCP_ROLLBACK_DOC = """
On the gcp platform the serving root is in GCS (TF-Serving on GKE follows its `models.config`), and
for the model `taxi` the Vertex AI endpoint's traffic moves back to the target version too: the
previous champion is kept deployed at 0% for this, so it is a traffic switch (an older version that
is no longer deployed is deployed again with all the traffic). Nothing is undeployed.
"""
FIND_SERVED_DOC = """
### find_served_model
Looks up the version of the champion model `taxi` at the run's `served_label` Param (`stable` by
default) in the serving root, and hands its path and version to the scoring step.

**Skipped** when no version has that label yet (no champion promoted): nothing is scored that day.
"""
SCORE_DOC = """
### score_trips
Scores every trip of the run's day with the served model (TFX's BulkInferrer, the "infer" step of
the Kubeflow taxi pipelines): Beam's `RunInference` on the SavedModel's `serving_default` signature,
the same signature TF-Serving answers with, so the scores are the served model's own outputs.
Writes `scores/predictions-*.csv` under the run's artifacts, published whole.

**On failure**: the log has the pipeline's error. It is safe to retry: a retry replaces the scores.
"""
LOAD_PREDICTIONS_DOC = """
### load_predictions
Replaces the day's rows of the `predictions` table (one row per trip: day, unique_key,
model_version, probability, scored_at) with the run's scores, in one transaction: a rerun or a
backfill of a day never duplicates a trip. Locally the table is `$TAXI_HOME/warehouse/predictions.duckdb`.

**On failure**: the table could not be written; nothing of the day changed. Clear the task to retry.
"""
GCP_LOAD_PREDICTIONS_DOC = """
On gcp: a BigQuery load job into the day's partition of the `predictions_table` setting
(`predictions$YYYYMMDD`, WRITE_TRUNCATE), which replaces that partition only.
"""
WAIT_FOR_SCORES_DOC = """
### wait_for_scores
Waits until the `predictions` table holds the scores of the run's day (taxi_batch_scoring's
`load_predictions` of that day). Reschedules itself every 5 minutes, for up to 12 hours.

**On failure** (timeout): the day was not scored; look at taxi_batch_scoring's run of that day.
"""
EXPORT_PREDICTIONS_DOC = """
### export_predictions
Reads the day's rows of the `predictions` table into the run's `predictions/part-*.csv`.

**On failure**: the table could not be read; the log says why. Safe to retry.
"""
MONITOR_DOC = """
### monitor_serving
Compares what the served model saw on the run's day with what it was trained on: each feature
against the champion's training window (numeric Jensen-Shannon, categorical L-infinity, null-share
jumps, values never seen in training, with the schema's thresholds), the served probabilities
against the eval split's, and the realized AUC and accuracy (the day's tips are its labels) against
the eval AUC. Writes `reports/monitor.html` (with the history across days) and `monitor/result.json`;
when a threshold is crossed, alerts on-call through the `taxi_alerts` connection.

**On failure**: an input is missing (no scores of the day, no deployment record of the version
that scored it); the message names it.
"""
REQUEST_RETRAINING_DOC = """
### request_retraining
When the monitor crossed a threshold, asks for an out-of-schedule `taxi_daily_retrain` run of the
window ending with this day (the `taxi_retrain_request` asset's event), at most once per day.
**Skipped** when nothing was crossed or the day already asked.
"""
DECIDE_APPROVAL_DOC = """
### decide_approval
Whether a person must approve this run's promotion, from the `require_approval` Param: `never`
(taxi_daily_retrain's default: unattended runs never wait), `always` (taxi_sliding_window's: a
person picks, as in the Kubeflow workflow), or `when_close` (only when the champion's AUC
gain over the model in service, on the same eval split, is below the margin in
`taxi_pipeline.deployment.APPROVAL_MARGIN`). Skips `approve_champion` when no one need approve.
"""
APPROVE_DOC = """
### approve_champion
Waits for a person to approve the promotion (Airflow's human-in-the-loop: the task's "Required
actions" in the UI shows the comparison and the model report's path). Approve: `promote_champion`
runs. Reject, or no answer within 24 hours: it is skipped and the served model is unchanged. The
decision and who made it are in `approval.json` in the run's artifacts and in this log.
"""
