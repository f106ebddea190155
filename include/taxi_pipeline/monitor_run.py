"""A monitor run's inputs and outputs, through the one file API (a local folder or `gs://`).

Inputs: the day's trips (the run's `day` window, extracted), the day's scores (read back from the
predictions table into the run's `predictions/`), and the champion that scored them: its
deployment record in the serving root names the run, window and variant it came from, whose
validation (statistics, schema) and evaluation (calibration, AUC) are its reference.
Outputs: `monitor/result.json`, `reports/monitor.html`, the day's row of the DAG's history.
"""

from __future__ import annotations

import logging
from collections import Counter

from taxi_pipeline import files, monitor
from taxi_pipeline.layout import SPLITS, RunLayout
from taxi_pipeline.serving_root import CHAMPION_MODEL, ServingRoot
from taxi_pipeline.window import Window

log = logging.getLogger(__name__)


def champion_layout(root: ServingRoot, version: int, artifact_root: str) -> tuple[RunLayout, str]:
    """The layout of the run that trained a served version of `taxi`, and its variant."""
    record = root.record(CHAMPION_MODEL, version)
    if record is None:
        raise ValueError(f"no deployment record of {CHAMPION_MODEL} version {version} in {root.uri}")
    layout = RunLayout(artifact_root, record["dag_id"], Window.parse(record["window"]), record["run_id"])
    return layout, record["variant"]


def day_trips(layout: RunLayout):
    import pandas as pd

    return pd.concat([files.read_split(layout.split_dir(split, "day")) for split in SPLITS], ignore_index=True)


def monitor_run(layout: RunLayout, root: ServingRoot, thresholds: monitor.MonitorThresholds | None = None) -> dict:
    """Monitor the run's day; returns {day, verdict, crossed, model_version, report}."""
    from taxi_pipeline.reports import monitor as report

    day = layout.window.start.date().isoformat()
    scores = files.read_split(layout.predictions_dir)
    if scores.empty:
        raise ValueError(f"no scores of {day} in the predictions table: has taxi_batch_scoring run for that day?")
    version, _ = Counter(int(v) for v in scores["model_version"]).most_common(1)[0]
    champion, variant = champion_layout(root, version, layout.artifact_root)
    log.info("Day %s was scored by %s version %s, trained by %s", day, CHAMPION_MODEL, version, champion.run_dir)
    statistics, schema = monitor.read_training_reference(champion.validation_dir())
    calibration, eval_auc = monitor.read_eval_reference(champion.evaluation_dir(variant))
    result = monitor.monitor_day(
        day_trips(layout), scores, statistics, schema, calibration, eval_auc, thresholds, day=day
    )
    files.write_json(files.join(layout.monitor_dir, "result.json"), result.to_dict())
    monitor.append_history(layout.history_dir, result.history_row())
    report_path = layout.report_path("monitor")
    files.write_text(report_path, report.build(result, monitor.read_history(layout.history_dir)))
    return {
        "day": day,
        "verdict": result.verdict,
        "crossed": result.crossed,
        "model_version": version,
        "report": report_path,
    }


def record_request(layout: RunLayout, request: dict, run_id: str) -> bool:
    """Record the day's retraining request; False when another run already asked for that day (a
    retry of the run that asked asks again: its first try may have died before its event)."""
    path = files.join(layout.retrain_requests_dir, f"{request['day']}.json")
    with files.lock(files.join(layout.retrain_requests_dir, ".lock")):
        earlier = files.read_json_or_none(path)
        if earlier is not None:
            return earlier["run_id"] == run_id
        files.write_json(path, {**request, "run_id": run_id})
    return True
