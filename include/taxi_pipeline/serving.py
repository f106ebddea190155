"""Deployment to the serving root, as TF-Serving reads it.

    <serving_root>/<model>/<version>/        a SavedModel (TF-Serving's layout; version = an int64)
    <serving_root>/<model>/records/<v>.json  the deployment record of each version (which run,
                                             window, variant, metrics)
    <serving_root>/<model>/labels.json       version labels, e.g. {"stable": 201601010000}
    <serving_root>/models.config             TF-Serving's ModelServerConfig, derived from the above

One model per variant (`taxi_standard`, `taxi_coarse`: each variant's latest blessed model, the
baseline of its next evaluation) and the champion model `taxi` (the blessed variant with the best
AUC), whose `stable` label is the version clients should use.

The version is derived from the run's data interval, so a retry or a backfill of a window writes
the same version (replaced in place, never a second copy), and a push never puts a model of an
older window over a newer one. Pushes are atomic: a version is copied under a dot-name the server
ignores and renamed into place.

Deployments are serialized twice: Airflow's `taxi_deploy` pool (one slot) for the DAGs' push and
promote tasks, and an exclusive lock on `<serving_root>/.deploy.lock` held by every change of the
serving root (a push, a label, the config), which also covers runs outside the scheduler
(`dag.test`, `airflow tasks test`, a second Airflow). Under the lock, "is a newer version served?"
and the write that follows cannot interleave with another push.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from taxi_pipeline.storage import atomic_directory, held_once_per_thread, write_text_atomically

CHAMPION_MODEL = "taxi"
STABLE_LABEL = "stable"
LOCK_NAME = ".deploy.lock"
log = logging.getLogger(__name__)


def deploy_lock(serving_root: str):
    """Hold the serving root's deployment lock (blocking until it is free). Re-entrant in a thread,
    so a push and the label move that follows it can share one hold."""
    return held_once_per_thread(os.path.realpath(serving_root), lambda: _lock_file(serving_root))


@contextlib.contextmanager
def _lock_file(serving_root: str):
    Path(serving_root).mkdir(parents=True, exist_ok=True)
    with open(Path(serving_root, LOCK_NAME), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, also by a killed process
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def model_name(variant: str) -> str:
    """The served model of a variant (TF-Serving model names are path segments)."""
    return f"taxi_{variant}"


def model_base_path(serving_root: str, model: str) -> str:
    return f"{serving_root.rstrip('/')}/{model}"


def version_for(data_interval_end: datetime) -> int:
    """The served version of a run: its data interval's end as YYYYMMDDHHMM (sortable, an int64)."""
    return int(data_interval_end.strftime("%Y%m%d%H%M"))


def served_versions(base_path: str) -> list[int]:
    base = Path(base_path)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists())


@dataclass
class DeploymentRecord:
    model: str
    version: int
    variant: str
    dag_id: str
    run_id: str
    window: str
    source: str  # the SavedModel that was pushed
    metrics: dict
    reasons: list


@dataclass
class PushResult:
    pushed: bool
    version: int
    message: str


def push_model(serving_root: str, record: DeploymentRecord) -> PushResult:
    """Publish `record.source` as `record.version` of `record.model`, unless a newer version serves."""
    base = model_base_path(serving_root, record.model)
    with deploy_lock(serving_root):
        newer = [v for v in served_versions(base) if v > record.version]
        if newer:
            return PushResult(False, record.version, (
                f"{record.model}: not pushing version {record.version} (window {record.window}): version "
                f"{max(newer)} of a newer window is already served; an older window never replaces a newer model"))
        with atomic_directory(f"{base}/{record.version}") as staging:
            shutil.copytree(record.source, staging, dirs_exist_ok=True)
        write_text_atomically(f"{base}/records/{record.version}.json", json.dumps(asdict(record), indent=1))
        write_models_config(serving_root)  # TF-Serving loads only the versions its config names
    return PushResult(True, record.version, f"{record.model}: pushed version {record.version} from {record.source}")


def read_labels(serving_root: str, model: str) -> dict[str, int]:
    path = Path(model_base_path(serving_root, model), "labels.json")
    return json.loads(path.read_text()) if path.exists() else {}


def set_label(serving_root: str, model: str, label: str, version: int) -> None:
    with deploy_lock(serving_root):
        if version not in served_versions(model_base_path(serving_root, model)):
            raise ValueError(f"{model} has no version {version} to label {label!r}")
        labels = {**read_labels(serving_root, model), label: version}
        write_text_atomically(f"{model_base_path(serving_root, model)}/labels.json", json.dumps(labels, indent=1))
        write_models_config(serving_root)


def push_and_label(serving_root: str, record: DeploymentRecord, label: str) -> PushResult:
    """Push `record` and, if it was pushed, point `label` at it, in one hold of the serving root's
    lock: no other push can come between the version and its label (else an older window's label
    move could land after a newer window's)."""
    with deploy_lock(serving_root):
        result = push_model(serving_root, record)
        if result.pushed:
            set_label(serving_root, record.model, label, result.version)
    return result


def models_config(serving_root: str) -> str:
    """TF-Serving's ModelServerConfig (text format) for every model under the serving root: the
    newest version and every labelled one stay loaded, so a label never names an unloaded version."""
    root = Path(serving_root)
    entries = []
    for base in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = served_versions(str(base))
        if not versions:
            continue
        entries.append(models_config_entry(base.name, str(base.resolve()), versions, read_labels(serving_root, base.name)))
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"


def models_config_entry(model: str, base_path: str, versions: list[int], labels: dict[str, int]) -> str:
    """One model's entry of the ModelServerConfig (shared with the gs:// serving root, gcs_serving)."""
    labels = {k: v for k, v in labels.items() if v in versions}
    keep = sorted({versions[-1], *labels.values()})
    lines = [f'    name: "{model}"', f'    base_path: "{base_path}"', '    model_platform: "tensorflow"',
             "    model_version_policy { specific { " + " ".join(f"versions: {v}" for v in keep) + " } }"]
    lines += [f'    version_labels {{ key: "{k}" value: {v} }}' for k, v in sorted(labels.items())]
    return "  config {\n" + "\n".join(lines) + "\n  }"


def write_models_config(serving_root: str) -> None:
    write_text_atomically(f"{serving_root.rstrip('/')}/models.config", models_config(serving_root))
