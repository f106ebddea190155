"""Roll a served model back to an earlier version (the `taxi_serving_rollback` DAG).

After a rollback to version T of a model:
- every version newer than T is retired: moved (renamed, atomically) to `<model>/.retired/<version>/`,
  a hidden name that neither the server nor `served_versions` reads, so T is the newest served version;
  a retired T is restored (a rollback can also move forward again, to a version it retired);
- every label of the model (e.g. `stable` of the champion `taxi`) points at T;
- `models.config` is rewritten, and the rollback is recorded in `<model>/rollbacks.json` (when, from,
  to, why, by which run).
It is idempotent: a rerun with the same target finds nothing to move and records nothing new for
its run. "previous" means the blessed version before the one in service (only blessed models are
ever pushed), i.e. the newest served version older than the current one (its `stable` label if set).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from taxi_pipeline.serving import (STABLE_LABEL, deploy_lock, model_base_path, read_labels, served_versions,
                                   write_models_config)
from taxi_pipeline.storage import write_text_atomically

PREVIOUS = "previous"
RETIRED = ".retired"


class RollbackError(ValueError):
    """The rollback cannot be made as asked (a message for the operator); nothing was changed."""


@dataclass
class Rollback:
    model: str
    from_version: int
    to_version: int
    retired: list[int] = field(default_factory=list)
    restored: bool = False
    labels: dict[str, int] = field(default_factory=dict)
    changed: bool = False

    def message(self) -> str:
        if not self.changed:
            return f"{self.model}: already served at version {self.to_version}; nothing to do"
        return (f"{self.model}: rolled back from version {self.from_version} to {self.to_version}"
                + (f"; retired {self.retired}" if self.retired else "") + (" (restored)" if self.restored else "")
                + (f"; labels {self.labels}" if self.labels else ""))


def retired_versions(base: Path) -> list[int]:
    directory = base / RETIRED
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists())


def current_version(serving_root: str, model: str) -> int:
    """The version clients get: the `stable` label's, else the newest."""
    versions = served_versions(model_base_path(serving_root, model))
    if not versions:
        raise RollbackError(f"{model} has no served version under {serving_root}")
    return read_labels(serving_root, model).get(STABLE_LABEL, versions[-1])


def resolve_target(serving_root: str, model: str, target: str | int) -> int:
    base = Path(model_base_path(serving_root, model))
    served, retired = served_versions(str(base)), retired_versions(base)
    if not served and not retired:
        raise RollbackError(f"{model} is not a served model (nothing under {base})")
    if str(target) == PREVIOUS:
        current = current_version(serving_root, model)
        older = [v for v in served if v < current]
        if not older:
            raise RollbackError(f"{model}: no blessed version older than the one in service ({current}) to roll back to; "
                                f"served versions: {served}")
        return older[-1]
    if not str(target).isdigit():
        raise RollbackError(f"target version must be {PREVIOUS!r} or a version number, not {target!r}")
    version = int(target)
    if version not in served and version not in retired:
        raise RollbackError(f"{model} has no version {version}; served: {served}, retired: {retired}")
    return version


def roll_back(serving_root: str, model: str, target: str | int, reason: str, run_id: str) -> Rollback:
    """Make `target` the version `model` serves; see the module's docstring."""
    if not reason or not reason.strip():
        raise RollbackError("say why: a rollback needs a reason")
    with deploy_lock(serving_root):  # no push, label move or other rollback in between
        return _roll_back(serving_root, model, target, reason, run_id)


def _roll_back(serving_root: str, model: str, target: str | int, reason: str, run_id: str) -> Rollback:
    base = Path(model_base_path(serving_root, model))
    version = resolve_target(serving_root, model, target)
    before = current_version(serving_root, model) if served_versions(str(base)) else version
    result = Rollback(model=model, from_version=before, to_version=version)
    if version in retired_versions(base) and version not in served_versions(str(base)):
        (base / RETIRED / str(version)).rename(base / str(version))
        result.restored = True
    for newer in [v for v in served_versions(str(base)) if v > version]:
        (base / RETIRED).mkdir(exist_ok=True)
        destination = base / RETIRED / str(newer)
        if destination.exists():  # retired before, pushed again since: keep the newest copy retired
            import shutil

            shutil.rmtree(destination)
        (base / str(newer)).rename(destination)
        result.retired.append(newer)
    labels = read_labels(serving_root, model)
    moved = {label: version for label, v in labels.items() if v != version}
    if moved:
        write_text_atomically(str(base / "labels.json"), json.dumps({**labels, **moved}, indent=1))
    result.labels = moved
    result.changed = bool(result.retired or result.restored or moved)
    write_models_config(serving_root)
    if result.changed:
        record_rollback(base, result, reason, run_id)
    return result


def record_rollback(base: Path, result: Rollback, reason: str, run_id: str) -> None:
    path = base / "rollbacks.json"
    records = json.loads(path.read_text()) if path.exists() else []
    records = [r for r in records if r.get("run_id") != run_id]  # a retried run records itself once
    records.append({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "from": result.from_version,
                    "to": result.to_version, "label": ", ".join(sorted(result.labels)) or "newest",
                    "retired": result.retired, "reason": reason.strip(), "run_id": run_id, **{
                        k: v for k, v in asdict(result).items() if k == "restored"}})
    write_text_atomically(str(path), json.dumps(records, indent=1))


def rollback_task(**context) -> dict:
    """The task: roll back the model the run's Params name, and say what happened in the log."""
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from taxi_pipeline.settings import get_settings

    params = context["params"]
    try:
        result = roll_back(get_settings().serving_root, params["model"], params["target_version"], params["reason"],
                           context["run_id"])
    except RollbackError as error:  # a wrong target does not get better with retries
        raise AirflowFailException(str(error)) from error
    logging.getLogger(__name__).info("%s. Reason: %s", result.message(), params["reason"])
    return asdict(result)
