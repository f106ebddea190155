"""The schema of the trips a DAG trains on: learned from the data, versioned, readable and editable.

As TFDV's schema (its field names where they fit), one YAML file per version under
`{artifact_root}/{dag_id}/schema/` (RunLayout.schema_dir): v0001.yaml, v0002.yaml, ... The
newest version is the current one; a version is never rewritten. For each column: its type, how
often it must be present, its numeric range or (categorical columns) its domain of values, and the
thresholds its drift (against the previous window) and skew (train against eval) are judged by.

How a schema is made:
- **inferred** by the first validation of a DAG that finds none, from the train splits of the
  windows that run extracted (the window and its reference, or the sliding-window DAG's three);
- **accepted**: a manual run with the `accept_data_changes` Param (the reason, in words) whose
  window fails only on schema anomalies writes the next version, which takes what that window
  showed (new domain values, a wider range, more nulls, and thresholds raised to what it
  measured), with the reason and the run in the version's `made` record;
- **edited** by a person: copy the newest version to the next number, change it, and review it
  as any change (the runs after use it).

Inference rules (the long tail included):
- type: the column's type in the window contract (taxi_model.columns);
- presence.min_fraction: the share present, less 0.10, floored to the hundredth;
- float_domain: the observed [min, max] widened by ten times its span on each side, not below 0
  for a column never negative: a range catches a unit or a sign gone wrong (fares in cents, a
  negated column), not a long tail (the first year's longest trip is 2 h, later years' 20 h);
  the trip's calendar position (month, timestamp) has no range;
- domain (categorical columns): every value seen. Companies have a long tail of owner-operators
  that come and go (in the sample, up to 8% of a month's trips name a company the first year never
  saw), so a window may have up to 10% of its values outside the domain before it fails
  (TFDV's distribution_constraints.min_domain_mass); payment types, 1%.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from taxi_model.columns import RAW_COLUMN_TYPES
from taxi_pipeline import files
from taxi_pipeline.trip_statistics import CATEGORICAL_COLUMNS, DISTRIBUTION_COLUMNS, LABEL

PRESENCE_MARGIN = 0.10
MIN_DOMAIN_MASS = {"company": 0.90, "payment_type": 0.99}
# Drift (the window against the previous one) and skew (a window's train split against its eval
# split) thresholds, with the largest values observed on the sample's real windows beside them:
# 365-day windows against the 365 days before them, 2015-2016, and their splits.
# Categorical columns: L-infinity distance of value shares.
LINF_DRIFT = {
    "payment_type": 0.15,  # observed 0.089
    "company": 0.15,
}  # observed 0.084
LINF_SKEW = {
    "payment_type": 0.15,  # observed 0.018
    "company": 0.15,
}  # observed 0.074
# Numeric columns: Jensen-Shannon divergence (base 2) over the reference's deciles. Observed for
# drift at most 0.042 for trip_miles and 0.012 (fare) for the other columns, for skew at most 0.011
# (a trip hour shifted by a time zone's 6 hours measures 0.075); months of ~600 trips have too few
# for it to be judged (taxi_pipeline.anomalies.MIN_VALUES_FOR_JS). The calendar position of a trip
# moves by construction, so its month and timestamp are not compared.
JS_DRIFT = {"trip_miles": 0.10}  # the others: JS_DRIFT_DEFAULT
JS_DRIFT_DEFAULT = 0.05
JS_SKEW = 0.05
NOT_COMPARED = ("trip_start_month", "trip_start_timestamp")
# Null share: the largest change against the previous window (observed 0.037, company).
NULL_RATE_JUMP = 0.10
# The label's base rate (share of big tippers): observed 0.23-0.28 a year; change against the
# previous window at most 0.066; a month against its own window at most 0.079 (months of ~600
# trips; 0.11 for a month of 111 trips, inside its sampling noise),
# between a window's splits at most 0.026.
LABEL_DRIFT = 0.10
LABEL_SKEW = 0.10

HEADER = """\
# The schema of the trips {dag_id} trains on: version {version}.
# A window is validated against the newest version (taxi_pipeline.schema explains every field).
# To accept a legitimate change (a new company, a new payment type) run the DAG by hand on the
# window that failed with the Param accept_data_changes set to the reason: it writes the next
# version. Or copy this file to the next version number, edit it, and have it reviewed.
# The thresholds' defaults, and the values the sample's real windows measure, are in schema.py.
"""


def _floor(value: float, step: float = 0.01) -> float:
    return math.floor(value / step + 1e-9) * step


RANGE_MARGIN = 10  # spans of the observed range added on each side: a range catches units and signs, not tails


def _min_fraction(present: float) -> float:
    """presence.min_fraction for a column present in this share of rows: less the margin, floored."""
    return round(max(0.0, _floor(present - PRESENCE_MARGIN)), 2)


def _span(lo: float, hi: float) -> tuple[float, float]:
    span = RANGE_MARGIN * (hi - lo)
    low = max(0.0, lo - span) if lo >= 0 else lo - span
    return round(low, 6), round(hi + span, 6)


def infer_schema(statistics: list[dict], made: dict) -> dict:
    """A schema of every column of the window contract, from the statistics of one or more sets of
    trips (each a dataset_statistics; sets without trips are passed over)."""
    sets = [s for s in statistics if s["num_examples"]]
    missing = [c for c, _ in RAW_COLUMN_TYPES if not sets or any(c not in s["features"] for s in sets)]
    if missing:
        raise ValueError(f"cannot infer a schema: no trips, or columns missing from them: {', '.join(missing)}")
    features = {}
    for column, _ in RAW_COLUMN_TYPES:
        seen = [s["features"][column] for s in sets]
        rows = sum(s["count"] + s["nulls"] for s in seen)
        present = sum(s["count"] for s in seen) / rows if rows else 1.0
        feature = {"type": seen[0]["type"], "presence": {"min_fraction": _min_fraction(present)}}
        if column in CATEGORICAL_COLUMNS:
            feature["domain"] = sorted({v for s in seen for v in s["frequencies"]})
            feature["distribution_constraints"] = {"min_domain_mass": MIN_DOMAIN_MASS[column]}
            feature["drift_comparator"] = {"infinity_norm": {"threshold": LINF_DRIFT[column]}}
            feature["skew_comparator"] = {"infinity_norm": {"threshold": LINF_SKEW[column]}}
            feature["null_rate_jump"] = NULL_RATE_JUMP
        elif column in DISTRIBUTION_COLUMNS:
            lows = [s["min"] for s in seen if "min" in s]
            if lows and column not in NOT_COMPARED:
                low, high = _span(min(lows), max(s["max"] for s in seen if "max" in s))
                feature["float_domain"] = {"min": low, "max": high}
            if column not in NOT_COMPARED:
                feature["drift_comparator"] = {
                    "jensen_shannon_divergence": {"threshold": JS_DRIFT.get(column, JS_DRIFT_DEFAULT)}
                }
                feature["skew_comparator"] = {"jensen_shannon_divergence": {"threshold": JS_SKEW}}
            feature["null_rate_jump"] = NULL_RATE_JUMP
        features[column] = feature
    return {
        "made": made,
        "label": {
            "name": LABEL,
            "drift_comparator": {"max_base_rate_change": LABEL_DRIFT},
            "skew_comparator": {"max_base_rate_change": LABEL_SKEW},
        },
        "features": features,
    }


def render(schema: dict, dag_id: str, version: int) -> str:
    import yaml

    return HEADER.format(dag_id=dag_id, version=version) + yaml.safe_dump(
        {"version": version, **{k: v for k, v in schema.items() if k != "version"}},
        sort_keys=False,
        width=100,
        allow_unicode=True,
    )


def parse(text: str) -> dict:
    """The schema in a version's text, its structure checked (a hand edit may break it)."""
    import yaml

    schema = yaml.safe_load(text)
    if not isinstance(schema, dict) or not isinstance(schema.get("features"), dict):
        raise ValueError("not a taxi schema: it has no features mapping")
    problems = []
    for column, feature in schema["features"].items():
        if (
            not isinstance(feature, dict)
            or "type" not in feature
            or not isinstance(feature.get("presence"), dict)
            or "min_fraction" not in feature["presence"]
        ):
            problems.append(f"{column} needs a type and presence.min_fraction")
        elif "domain" in feature and (column not in CATEGORICAL_COLUMNS or "distribution_constraints" not in feature):
            problems.append(f"{column}: a domain belongs to a categorical column, with distribution_constraints")
    if not isinstance(schema.get("label"), dict) or "name" not in schema["label"]:
        problems.append("the label needs a name")
    if problems:
        raise ValueError("the schema is not valid: " + "; ".join(problems))
    return schema


def made(how: str, **details) -> dict:
    return {"how": how, "at": datetime.now(UTC).isoformat(timespec="seconds"), **details}


def _raise(threshold: float, observed: float) -> float:
    """A threshold that lets the observed value through, with a quarter on top, rounded up to 0.01."""
    return max(threshold, math.ceil(observed * 1.25 * 100) / 100)


def threshold_slot(owner: dict, comparator: str) -> tuple[dict, str]:
    """Where a feature's (or the label's) threshold for a comparator sits: (mapping, key)."""
    if comparator == "null_rate_jump":
        return owner, comparator
    settings = owner[comparator]
    if "max_base_rate_change" in settings:
        return settings, "max_base_rate_change"
    return next(iter(settings.values())), "threshold"


def threshold(owner: dict, comparator: str) -> float | None:
    if comparator not in owner:
        return None
    settings, key = threshold_slot(owner, comparator)
    return settings[key]


def accept(schema: dict, statistics: dict, measured: dict, reason: str, run_id: str) -> dict:
    """The next version of `schema` that takes what a window showed (its dataset_statistics), and
    the thresholds raised to the distances `measured` on it (anomalies.Measurements)."""
    import copy

    new = copy.deepcopy(schema)
    new.pop("version", None)
    changes = []
    for column, feature in new["features"].items():
        stats = statistics["features"].get(column)
        if not stats:
            continue
        total = stats["count"] + stats["nulls"]
        present = stats["count"] / total if total else 1.0
        if present < feature["presence"]["min_fraction"]:
            feature["presence"]["min_fraction"] = _min_fraction(present)
            changes.append(f"{column}: presence.min_fraction lowered to {feature['presence']['min_fraction']}")
        if "domain" in feature:
            added = sorted(set(stats.get("frequencies", {})) - set(feature["domain"]))
            if added:
                feature["domain"] = sorted(set(feature["domain"]) | set(added))
                changes.append(
                    f"{column}: {len(added)} values added to the domain ({', '.join(added[:5])}"
                    f"{', ...' if len(added) > 5 else ''})"
                )
        if "float_domain" in feature and "min" in stats:
            domain = feature["float_domain"]
            if stats["min"] < domain["min"] or stats["max"] > domain["max"]:
                domain["min"], domain["max"] = _span(min(domain["min"], stats["min"]), max(domain["max"], stats["max"]))
                changes.append(f"{column}: float_domain widened to [{domain['min']:g}, {domain['max']:g}]")
    for (column, comparator), observed in measured.items():
        owner = new["label"] if column == new["label"]["name"] else new["features"].get(column)
        if owner is None or comparator not in owner:
            continue
        settings, key = threshold_slot(owner, comparator)
        old = settings[key]
        settings[key] = _raise(old, observed)
        if settings[key] != old:
            changes.append(f"{column}: {comparator} raised from {old} to {settings[key]}")
    new["made"] = made("accepted", reason=reason, run=run_id, changes=changes, previous=schema.get("version"))
    return new


class SchemaStore:
    """The versions of a DAG's schema in a folder (local or gs://), each written once."""

    PATTERN = re.compile(r"v(\d{4,})\.yaml")

    def __init__(self, directory: str, dag_id: str):
        self.directory, self.dag_id = directory.rstrip("/"), dag_id

    def path(self, version: int) -> str:
        return f"{self.directory}/v{version:04d}.yaml"

    def versions(self) -> list[int]:
        if not files.exists(self.directory):
            return []
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in files.children(self.directory))
        return sorted(int(m.group(1)) for m in map(self.PATTERN.fullmatch, names) if m)

    def current(self) -> str | None:
        """The text of the newest version, or None if there is none yet."""
        versions = self.versions()
        if not versions:
            return None
        text = files.read_text(self.path(versions[-1]))
        named = parse(text).get("version")
        if named != versions[-1]:
            raise ValueError(
                f"{self.path(versions[-1])} says version: {named}; a version's file and its "
                f"version: line must agree (set version: {versions[-1]})"
            )
        return text

    def next_text(self, schema: dict) -> str:
        """`schema` as the text of the version after the newest."""
        return render(schema, self.dag_id, (self.versions() or [0])[-1] + 1)

    def write(self, text: str) -> int:
        """Write a version's text under its number, once: refused if that version exists (another
        run wrote it meanwhile). Returns the version."""
        version = parse(text)["version"]
        with files.lock(f"{self.directory}/.lock", holder="schema"):
            if files.exists(self.path(version)):
                raise FileExistsError(
                    f"schema version {version} was written meanwhile by another run "
                    f"({self.path(version)}): run again to validate against it"
                )
            files.write_text(self.path(version), text)
        return version
