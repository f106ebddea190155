"""Deployment to a gs:// serving root: serving.py's layout and rules, on GCS.

Same layout as the local serving root (`<root>/<model>/<version>/`, `records/<v>.json`,
`labels.json`, `models.config`), same version (the run's data interval end) and the same guard (an
older window never replaces a newer version). GCS cannot rename a folder, so a push is made safe
by its order instead: the version's objects are copied with `saved_model.pb` last (a version
without it is no version, to served_versions and to TF-Serving's loader), then the record, and
then `models.config`, the one object TF-Serving reads to know which versions to load: a version
is served only once the config names it, after it is complete.

Every change of the serving root (a push, a label, models.config) holds the root's lock object
`<root>/.deploy.lock` (gcs.lock: created with ifGenerationMatch=0, naming its holder, broken when
stale), as the local serving root holds its file lock: "is a newer version served?" and the writes
that follow cannot interleave with another push, from this Airflow or another. A retried push of
the same version rewrites nothing that is already there with the same content (the version's
objects, the record, models.config); when the version's objects differ, its `saved_model.pb` is
removed first and written again last.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import asdict

from taxi_pipeline import gcs
from taxi_pipeline.serving import LOCK_NAME, DeploymentRecord, PushResult, model_base_path, models_config_entry

SAVED_MODEL = "saved_model.pb"


def lock_uri(serving_root: str) -> str:
    return f"{serving_root.rstrip('/')}/{LOCK_NAME}"


@contextlib.contextmanager
def deploy_lock(serving_root: str, holder: str = "", **options):
    """Hold the serving root's lock (re-entrant in a thread: a push and the label move after it can
    share one hold). `options`: gcs.lock's stale_after, wait, poll."""
    with gcs.lock(lock_uri(serving_root), holder=holder or "a change of the serving root", **options):
        yield


def served_versions(base_path: str) -> list[int]:
    names = gcs.list_names(base_path)
    return sorted({int(n.split("/")[0]) for n in names if n.split("/")[0].isdigit() and n == f"{n.split('/')[0]}/{SAVED_MODEL}"})


def read_labels(serving_root: str, model: str) -> dict[str, int]:
    path = f"{model_base_path(serving_root, model)}/labels.json"
    return json.loads(gcs.read_text(path)) if gcs.exists(path) else {}


def models_config(serving_root: str) -> str:
    entries = []
    for model in gcs.list_children(serving_root):
        if model.startswith(".") or model == "models.config":
            continue
        base = model_base_path(serving_root, model)
        versions = served_versions(base)
        if versions:
            entries.append(models_config_entry(model, base, versions, read_labels(serving_root, model)))
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"


def write_models_config(serving_root: str) -> None:
    with deploy_lock(serving_root, holder="models.config"):
        gcs.write_text_if_changed(f"{serving_root.rstrip('/')}/models.config", models_config(serving_root))


def push_model(serving_root: str, record: DeploymentRecord, **lock_options) -> PushResult:
    """Publish `record.source` (a gs:// SavedModel) as `record.version` of `record.model`."""
    base = model_base_path(serving_root, record.model)
    holder = f"push of {record.model} version {record.version} ({record.dag_id}, {record.run_id})"
    with deploy_lock(serving_root, holder=holder, **lock_options):
        newer = [v for v in served_versions(base) if v > record.version]
        if newer:
            return PushResult(False, record.version, (
                f"{record.model}: not pushing version {record.version} (window {record.window}): version {max(newer)} "
                f"of a newer window is already served; an older window never replaces a newer model"))
        gcs.copy_tree(record.source, f"{base}/{record.version}", last=(SAVED_MODEL,))
        gcs.write_text_if_changed(f"{base}/records/{record.version}.json", json.dumps(asdict(record), indent=1))
        write_models_config(serving_root)
    return PushResult(True, record.version, f"{record.model}: pushed version {record.version} from {record.source}")


def set_label(serving_root: str, model: str, label: str, version: int, **lock_options) -> None:
    with deploy_lock(serving_root, holder=f"label {label} of {model} -> {version}", **lock_options):
        if version not in served_versions(model_base_path(serving_root, model)):
            raise ValueError(f"{model} has no version {version} to label {label!r}")
        labels = {**read_labels(serving_root, model), label: version}
        gcs.write_text_if_changed(f"{model_base_path(serving_root, model)}/labels.json", json.dumps(labels, indent=1))
        write_models_config(serving_root)
