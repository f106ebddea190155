"""The serving root, as TF-Serving reads it, on either platform (a local folder or `gs://`).

    <root>/<model>/<version>/          a SavedModel (TF-Serving's layout; version = an int64)
    <root>/<model>/.retired/<version>/ a version a rollback took out of service (hidden: never served)
    <root>/<model>/records/<v>.json    the deployment record of each version (run, window, variant, metrics)
    <root>/<model>/labels.json         version labels, e.g. {"stable": 201601010000}
    <root>/<model>/rollbacks.json      every rollback: when, from, to, why, by which run
    <root>/models.config               TF-Serving's ModelServerConfig, derived from the above
    <root>/.deploy.lock                held by every change (taxi_pipeline.files.lock)

One model per variant (`taxi_standard`, `taxi_coarse`: each variant's latest blessed model, the
baseline of its next evaluation) and the champion model `taxi` (the blessed variant with the best
AUC), whose `stable` label is the version clients should use.

The version is the run's data interval end, so a retry or a backfill of a window writes the same
version (replaced in place, never a second copy), and a push never puts an older window's model over
a newer one. A version is published whole (locally a staging copy renamed into place; on GCS copied
with `saved_model.pb` last: a folder without it is no version, to `versions` and to TF-Serving), and
`models.config`, the one file TF-Serving reads to know which versions to load, names it only after.

Every change holds the root's lock, as well as Airflow's one-slot `taxi_deploy` pool: "is a newer
version served?" and the writes that follow cannot interleave with another push, from this Airflow,
another one, or `airflow tasks test`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from taxi_model.serving_layout import RETIRED, SAVED_MODEL, versions_in
from taxi_pipeline import files

CHAMPION_MODEL = "taxi"
STABLE_LABEL = "stable"
LOCK_NAME = ".deploy.lock"
PREVIOUS = "previous"  # a rollback's target: the blessed version before the one in service


def model_name(variant: str) -> str:
    """The served model of a variant (TF-Serving model names are path segments)."""
    return f"taxi_{variant}"


def version_for(data_interval_end: datetime) -> int:
    """The served version of a run: its data interval's end as YYYYMMDDHHMM (sortable, an int64)."""
    return int(data_interval_end.strftime("%Y%m%d%H%M"))


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
        return (
            f"{self.model}: rolled back from version {self.from_version} to {self.to_version}"
            + (f"; retired {self.retired}" if self.retired else "")
            + (" (restored)" if self.restored else "")
            + (f"; labels {self.labels}" if self.labels else "")
        )


class ServingRoot:
    def __init__(self, uri: str):
        self.uri = str(uri).rstrip("/")

    def __repr__(self) -> str:
        return f"ServingRoot({self.uri!r})"

    def base_path(self, model: str) -> str:
        """The model's base path, as TF-Serving's config names it."""
        return files.join(self.uri, model)

    def _retired_path(self, model: str, version: int | None = None) -> str:
        base = files.join(self.base_path(model), RETIRED)
        return base if version is None else files.join(base, str(version))

    def versions(self, model: str) -> list[int]:
        """The model's served (complete) versions, oldest first."""
        return versions_in(self.base_path(model), files.children, files.exists)

    def retired_versions(self, model: str) -> list[int]:
        return versions_in(self._retired_path(model), files.children, files.exists)

    def models(self) -> list[str]:
        return [m for m in files.subdirs(self.uri) if self.versions(m)]

    def labels(self, model: str) -> dict[str, int]:
        return files.read_json_or_none(files.join(self.base_path(model), "labels.json")) or {}

    def record(self, model: str, version: int) -> dict | None:
        return files.read_json_or_none(files.join(self.base_path(model), "records", f"{version}.json"))

    def rollbacks(self, model: str) -> list[dict]:
        return files.read_json_or_none(files.join(self.base_path(model), "rollbacks.json")) or []

    def current_version(self, model: str) -> int:
        """The version clients get: the `stable` label's, else the newest."""
        versions = self.versions(model)
        if not versions:
            raise RollbackError(f"{model} has no served version under {self.uri}")
        return self.labels(model).get(STABLE_LABEL, versions[-1])

    def lock(self, holder: str = "", **options):
        """Hold the root's lock (re-entrant in a thread: a push and its label move share one hold).
        `options` (GCS): the lock's stale_after, wait, poll."""
        return files.lock(files.join(self.uri, LOCK_NAME), holder=holder or "a change of the serving root", **options)

    # --- deployment ------------------------------------------------------------------------------

    def push(self, record: DeploymentRecord, **lock_options) -> PushResult:
        """Publish `record.source` (a SavedModel folder) as `record.version` of `record.model`, unless a
        newer version is served, or this version came from another DAG. A retry (or a reprocess of the
        window by the same DAG) rewrites the same version (nothing, when it is complete)."""
        base = self.base_path(record.model)
        holder = f"push of {record.model} version {record.version} ({record.dag_id}, {record.run_id})"
        with self.lock(holder, **lock_options):
            newer = [v for v in self.versions(record.model) if v > record.version]
            if newer:
                return PushResult(
                    False,
                    record.version,
                    (
                        f"{record.model}: not pushing version {record.version} (window {record.window}): version "
                        f"{max(newer)} of a newer window is already served; "
                        "an older window never replaces a newer model"
                    ),
                )
            served = self.record(record.model, record.version)
            if served and served["dag_id"] != record.dag_id:
                return PushResult(
                    False,
                    record.version,
                    (
                        f"{record.model}: not pushing version {record.version} (window {record.window}): that version "
                        f"is served from {served['dag_id']}'s run {served['run_id']}; another DAG never replaces it"
                    ),
                )
            self._publish(record.source, files.join(base, str(record.version)))
            files.write_text_if_changed(
                files.join(base, "records", f"{record.version}.json"), files.json_text(asdict(record))
            )
            self.write_models_config()  # TF-Serving loads only the versions its config names
        return PushResult(True, record.version, f"{record.model}: pushed version {record.version} from {record.source}")

    @staticmethod
    def _publish(source: str, version_dir: str) -> None:
        if files.is_remote(version_dir):
            files.copy_tree(source, version_dir, last=(SAVED_MODEL,))
            return
        with files.atomic_directory(version_dir) as staging:  # whole, by a rename
            files.copy_tree(source, str(staging))

    def set_label(self, model: str, label: str, version: int, **lock_options) -> None:
        with self.lock(f"label {label} of {model} -> {version}", **lock_options):
            if version not in self.versions(model):
                raise ValueError(f"{model} has no version {version} to label {label!r}")
            self._write_labels(model, {**self.labels(model), label: version})
            self.write_models_config()

    def _write_labels(self, model: str, labels: dict[str, int]) -> None:
        files.write_text_if_changed(files.join(self.base_path(model), "labels.json"), files.json_text(labels))

    def push_and_label(self, record: DeploymentRecord, label: str, **lock_options) -> PushResult:
        """Push `record` and, if it was pushed, point `label` at it, in one hold of the lock: no other
        push comes between a version and its label (else an older window's label move could land
        after a newer window's)."""
        with self.lock(f"push of {record.model} {record.version} labelled {label}", **lock_options):
            result = self.push(record)
            if result.pushed:
                self.set_label(record.model, label, result.version)
        return result

    # --- TF-Serving's model config ---------------------------------------------------------------

    def models_config(self) -> str:
        """TF-Serving's ModelServerConfig (text format) for every model of the root: the newest version
        and every labelled one stay loaded, so a label never names an unloaded version."""
        entries = []
        for model in files.subdirs(self.uri):
            versions = self.versions(model)
            if versions:
                entries.append(models_config_entry(model, self._config_base_path(model), versions, self.labels(model)))
        return "model_config_list {\n" + "\n".join(entries) + "\n}\n"

    def _config_base_path(self, model: str) -> str:
        base = self.base_path(model)
        return base if files.is_remote(base) else os.path.realpath(base)

    def write_models_config(self) -> None:
        with self.lock("models.config"):
            files.write_text_if_changed(files.join(self.uri, "models.config"), self.models_config())

    # --- rollback --------------------------------------------------------------------------------

    def resolve_target(self, model: str, target: str | int) -> int:
        """The version a rollback to `target` (`previous` or a version number) serves."""
        served, retired = self.versions(model), self.retired_versions(model)
        if not served and not retired:
            raise RollbackError(f"{model} is not a served model (nothing under {self.base_path(model)})")
        if str(target) == PREVIOUS:
            current = self.current_version(model)
            older = [v for v in served if v < current]
            if not older:
                raise RollbackError(
                    f"{model}: no blessed version older than the one in service ({current}) to roll "
                    f"back to; served versions: {served}"
                )
            return older[-1]
        if not str(target).isdigit():
            raise RollbackError(f"target version must be {PREVIOUS!r} or a version number, not {target!r}")
        version = int(target)
        if version not in served and version not in retired:
            raise RollbackError(f"{model} has no version {version}; served: {served}, retired: {retired}")
        return version

    def roll_back(self, model: str, target: str | int, reason: str, run_id: str) -> Rollback:
        """Make `target` the version `model` serves: a retired target is restored, every newer version
        is retired (kept under `.retired/`, not deleted), every label of the model moves to it,
        `models.config` is rewritten and the rollback recorded. Idempotent: a rerun changes nothing
        and records nothing new for its run. A rollback can move forward again, to a version it retired."""
        if not reason or not reason.strip():
            raise RollbackError("say why: a rollback needs a reason")
        with self.lock(f"rollback of {model} to {target} ({run_id})"):  # no push or label move in between
            version = self.resolve_target(model, target)
            served = self.versions(model)
            result = Rollback(
                model=model, from_version=self.current_version(model) if served else version, to_version=version
            )
            if version not in served:
                files.move_tree(
                    self._retired_path(model, version),
                    files.join(self.base_path(model), str(version)),
                    last=(SAVED_MODEL,),
                )
                result.restored = True
            labels = self.labels(model)
            result.labels = {label: version for label, v in labels.items() if v != version}
            if result.labels:
                self._write_labels(model, {**labels, **result.labels})
            # the target is labelled (so loaded) before the newer versions go: no moment without a model
            self.write_models_config()
            for newer in [v for v in self.versions(model) if v > version]:
                files.move_tree(
                    files.join(self.base_path(model), str(newer)), self._retired_path(model, newer), last=(SAVED_MODEL,)
                )
                result.retired.append(newer)
            self.write_models_config()
            result.changed = bool(result.retired or result.restored or result.labels)
            if result.changed:
                self._record_rollback(result, reason, run_id)
        return result

    def _record_rollback(self, result: Rollback, reason: str, run_id: str) -> None:
        records = [r for r in self.rollbacks(result.model) if r.get("run_id") != run_id]  # a retry records once
        records.append(
            {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "from": result.from_version,
                "to": result.to_version,
                "label": ", ".join(sorted(result.labels)) or "newest",
                "retired": result.retired,
                "reason": reason.strip(),
                "run_id": run_id,
                "restored": result.restored,
            }
        )
        files.write_text(files.join(self.base_path(result.model), "rollbacks.json"), files.json_text(records))


def models_config_entry(model: str, base_path: str, versions: list[int], labels: dict[str, int]) -> str:
    """One model's entry of the ModelServerConfig."""
    labels = {k: v for k, v in labels.items() if v in versions}
    keep = sorted({versions[-1], *labels.values()})
    lines = [
        f'    name: "{model}"',
        f'    base_path: "{base_path}"',
        '    model_platform: "tensorflow"',
        "    model_version_policy { specific { " + " ".join(f"versions: {v}" for v in keep) + " } }",
    ]
    lines += [f'    version_labels {{ key: "{k}" value: {v} }}' for k, v in sorted(labels.items())]
    return "  config {\n" + "\n".join(lines) + "\n  }"
