"""The daily serving monitor: what the served model saw on one day against what it was trained on.

For one day, the day's trips (the window SQL's columns, taxi_pipeline/sql/window.sql) and the served
model's predictions for them (batch scoring: unique_key, model_version, probability) are set against
- the champion's training window: its statistics (the whole window of the `statistics.json` its
  validation wrote) and the schema it was validated against (`schema.yaml` beside it). The day is
  compared the way validation compares a window's eval split with its train split
  (taxi_pipeline.anomalies.compare with the schema's skew thresholds: categorical L-infinity, numeric
  Jensen-Shannon, null shares, the label's base rate), and checked against the schema
  (anomalies.check_schema: values it never saw, ranges, missing columns);
- the champion's evaluation (taxi_model.evaluate: `plots.json`'s calibration histogram of the eval
  split, `blessing.json`'s AUC): the served probabilities' distribution against the eval split's,
  and the day's realized AUC (its labels are known once the tips are in) against the eval AUC.

`MonitorResult.crossed` says in words every threshold the day crossed; empty means the day is ok.
Each day is one row of the monitor's history (taxi_pipeline.history: `<history_dir>/<day>.json`,
rewritten by a rerun of the day, and `history.csv`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from taxi_pipeline import files
from taxi_pipeline.anomalies import MIN_VALUES_FOR_JS, check_schema, compare, js_divergence, js_of_masses, share_moves
from taxi_pipeline.history import write_history
from taxi_pipeline.schema import threshold
from taxi_pipeline.trip_statistics import dataset_statistics, label_of

# Serving against training is TFDV's skew: the same thresholds as a window's eval split against its train split.
COMPARATOR = "skew_comparator"
AGAINST = "against the training window"
# A day has one day of the week: its distribution differs from a window's by construction, as the
# month and timestamp do for any window (schema.NOT_COMPARED); only its null share is watched.
FIXED_BY_THE_DAY = ("trip_start_day",)
HISTORY_KEY = "window_key"  # taxi_pipeline.history's key of a row: here the monitored day


@dataclass(frozen=True)
class MonitorThresholds:
    """The monitor's own thresholds; the features' drift thresholds are the schema's."""

    # Jensen-Shannon divergence (base 2) of the served probabilities' 10-bin histogram against the
    # eval split's. For a model like the sample's (AUC 0.95, a quarter big tippers), the noise of 500
    # predictions against 2,000 eval trips is 0.004 (99th percentile 0.01); every logit moved by 1
    # (mean probability +0.15) measures 0.055.
    prediction_js: float = 0.05
    # How far the realized AUC may fall below the eval AUC: 0.05 takes a model blessed at the
    # sample's 0.934 to about the blessing floor (0.88), and is 3 to 5 standard errors of a day's
    # AUC at 500 labeled trips (0.016 at AUC 0.93, 0.010 at 0.95; a quarter of them big tippers).
    auc_drop: float = 0.05
    # Fewer scored trips than this: the prediction drift and the realized quality are measured and
    # shown, not judged (their noise would cross the thresholds above by chance).
    min_rows: int = 500


@dataclass
class PredictionDrift:
    """The served probabilities' histogram against the eval split's, over the calibration bins."""

    count: int
    js: float | None  # None without predictions
    mean: float | None
    reference_mean: float | None  # the eval split's mean prediction
    edges: list[float]  # the bins' bounds: bin i is [edges[i], edges[i + 1]), the last includes 1
    shares: list[float]
    reference_shares: list[float]


@dataclass
class RealizedQuality:
    count: int
    positives: int
    auc: float
    accuracy: float  # at 0.5


@dataclass
class FeatureDistance:
    """One column's distance from the training window, and whether it crossed the schema's threshold."""

    column: str
    measure: str | None  # "L-infinity", "Jensen-Shannon", "base rate change"; None: null share only
    distance: float | None
    threshold: float | None
    null_change: float | None = None  # the day's null share less the training window's
    null_threshold: float | None = None
    crossed: bool = False
    null_crossed: bool = False
    status: str = "ok"

    @property
    def history_key(self) -> str | None:
        prefix = {"L-infinity": "linf", "Jensen-Shannon": "js", "base rate change": "base_rate"}.get(self.measure)
        return f"{prefix}_{self.column}" if prefix else None


@dataclass
class MonitorResult:
    day: str
    model_version: str  # the versions that scored the day, comma-separated if more than one
    rows: int  # the day's trips
    scored: int  # of them with a prediction
    features: list[FeatureDistance]
    unseen: dict[str, list[tuple[str, float]]]  # column -> (value the schema never saw, share of the day's values)
    prediction: PredictionDrift
    quality: RealizedQuality | None
    eval_auc: float | None
    thresholds: MonitorThresholds
    crossed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def alert(self) -> bool:
        return bool(self.crossed)

    @property
    def verdict(self) -> str:
        return "alert" if self.crossed else "ok"

    @property
    def auc_change(self) -> float | None:
        if self.quality is None or self.eval_auc is None:
            return None
        return self.quality.auc - self.eval_auc

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}

    def history_row(self) -> dict:
        """The day's row of the history: flat (history.csv has one column per key), one distance per measured column."""
        row = {
            HISTORY_KEY: self.day,
            "model_version": self.model_version,
            "rows": self.rows,
            "scored": self.scored,
            "verdict": self.verdict,
            "crossed": len(self.crossed),
            "reasons": "; ".join(self.crossed),
            "realized_auc": self.quality.auc if self.quality else None,
            "realized_accuracy": self.quality.accuracy if self.quality else None,
            "eval_auc": self.eval_auc,
            "prediction_js": self.prediction.js,
            "mean_probability": self.prediction.mean,
            "eval_mean_probability": self.prediction.reference_mean,
        }
        row.update({f.history_key: f.distance for f in self.features if f.history_key})
        return row


def rank_auc(scores, labels) -> float | None:
    """The ROC AUC as the Mann-Whitney statistic: the chance a positive outranks a negative, ties
    counted half (average ranks). None when a class is absent."""
    import numpy as np

    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # The average 1-based rank of each distinct score: its tie group's first and last rank, halved.
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2
    rank_sum = float(average[inverse][labels].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def realized_quality(probabilities, labels) -> RealizedQuality | None:
    """AUC and accuracy at 0.5 of served probabilities against the labels that came true; None
    when a class is absent (no AUC)."""
    import numpy as np

    p, y = np.asarray(probabilities, dtype=float), np.asarray(labels, dtype=bool)
    auc = rank_auc(p, y)
    if auc is None:
        return None
    # TFMA's (Keras') binary accuracy: a probability above the threshold predicts the positive class.
    accuracy = float(((p > 0.5) == y).mean())
    return RealizedQuality(count=len(y), positives=int(y.sum()), auc=float(auc), accuracy=accuracy)


def prediction_drift(probabilities, reference_bins: list[dict]) -> PredictionDrift:
    """The served probabilities against the eval split's calibration histogram (evaluate.plots_table's
    "calibration": bins of lower, upper, examples, labels, predictions): the Jensen-Shannon
    divergence of the two histograms over those bins, and each side's mean probability."""
    import numpy as np

    if not reference_bins:
        raise ValueError("the eval split's calibration histogram has no bins")
    bins = sorted(reference_bins, key=lambda b: b["lower"])
    edges = [float(b["lower"]) for b in bins] + [float(bins[-1]["upper"])]
    examples = np.array([b["examples"] for b in bins], dtype=float)
    if not examples.sum():
        raise ValueError("the eval split's calibration histogram counts no examples")
    reference_shares = examples / examples.sum()
    p = np.asarray(probabilities, dtype=float)
    p = p[np.isfinite(p)]
    # The bin of each probability as TFMA's buckets fall into evaluate._calibration_bins: by lower
    # bound, inclusive; out-of-range values (and 1.0) in the end bins.
    index = np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, len(bins) - 1)
    counts = np.bincount(index, minlength=len(bins)).astype(float)
    shares = counts / len(p) if len(p) else counts
    return PredictionDrift(
        count=len(p),
        js=js_of_masses(shares, reference_shares) if len(p) else None,
        mean=float(p.mean()) if len(p) else None,
        reference_mean=float(sum(b["predictions"] for b in bins) / examples.sum()),
        edges=edges,
        shares=shares.tolist(),
        reference_shares=reference_shares.tolist(),
    )


def whole_window(statistics: dict) -> dict:
    """The whole window's dataset_statistics out of a validation's statistics.json
    ({"window": {"splits", "all"}, "reference"}), a generate_statistics, or a dataset_statistics itself."""
    if "window" in statistics:
        statistics = statistics["window"]
    return statistics["all"] if "all" in statistics else statistics


def read_training_reference(validation_dir: str) -> tuple[dict, dict]:
    """(the whole window's statistics, the schema) of a model's training window, from its
    validation folder (RunLayout.validation_dir: statistics.json and schema.yaml)."""
    from taxi_pipeline.schema import parse

    statistics = whole_window(files.read_json(f"{validation_dir}/statistics.json"))
    return statistics, parse(files.read_text(f"{validation_dir}/schema.yaml"))


def read_eval_reference(evaluation_dir: str) -> tuple[list[dict], float | None]:
    """(the eval split's calibration histogram, the eval AUC) of a model, from its evaluation folder
    (RunLayout.evaluation_dir: plots.json and blessing.json; the model is the candidate there)."""
    plots = files.read_json(f"{evaluation_dir}/plots.json")
    blessing = files.read_json(f"{evaluation_dir}/blessing.json")
    return plots["candidate"]["calibration"], blessing["metrics"].get("auc")


def day_schema(schema: dict) -> dict:
    """The schema a day is compared with: without the comparators of the columns a day fixes."""
    day = copy.deepcopy(schema)
    for column in FIXED_BY_THE_DAY:
        day["features"].get(column, {}).pop(COMPARATOR, None)
    return day


def _unseen(served: dict, schema: dict) -> dict[str, list[tuple[str, float]]]:
    """Each categorical value of the day outside the schema's domain, with its share of the column's values."""
    out = {}
    for column, feature in schema["features"].items():
        stats = served["features"].get(column)
        if "domain" not in feature or not stats or not stats["count"]:
            continue
        known = set(feature["domain"])
        values = [(v, rows / stats["count"]) for v, rows in stats.get("frequencies", {}).items() if v not in known]
        if values:
            out[column] = sorted(values, key=lambda item: (-item[1], item[0]))
    return out


def _distances(served: dict, reference: dict, schema: dict, findings) -> list[FeatureDistance]:
    """Every compared column's distance (compare's own measure where it judged it; otherwise measured
    the same way, for people, and said to be unjudged), beside its threshold and verdict."""
    crossed = {(a.column, a.comparator) for a in findings.anomalies if a.comparator}
    out = []
    for column, feature in schema["features"].items():
        cur, ref = served["features"].get(column), reference["features"].get(column)
        if cur is None or ref is None:
            continue  # a missing column is an anomaly of its own
        limit = threshold(feature, COMPARATOR)
        row = FeatureDistance(column, None, None, limit)
        if limit is not None and "frequencies" in cur:
            moves = share_moves(cur, ref)
            row.measure, row.distance = "L-infinity", moves[0][0] if moves else 0.0
            row.crossed = (column, COMPARATOR) in crossed
            if not row.crossed and row.distance > limit:
                row.status = "within sampling noise"
        elif limit is not None and cur.get("quantiles") and ref.get("quantiles"):
            row.measure = "Jensen-Shannon"
            row.crossed = (column, COMPARATOR) in crossed
            if (column, COMPARATOR) in findings.measured:
                row.distance = findings.measured[(column, COMPARATOR)]
            else:
                row.distance = js_divergence(cur, ref)
                row.status = f"not judged: fewer than {MIN_VALUES_FOR_JS} values"
        elif column in FIXED_BY_THE_DAY:
            row.status = "null share only: a day has one day of the week"
        elif feature.get("null_rate_jump") is None:
            continue
        else:
            row.status = "null share only"
        row.null_threshold = feature.get("null_rate_jump")
        if row.null_threshold is not None:
            row.null_change = cur["null_fraction"] - ref["null_fraction"]
            row.null_crossed = (column, "null_rate_jump") in crossed
        if row.crossed or row.null_crossed:
            row.status = "CROSSED" + (" (null share)" if row.null_crossed and not row.crossed else "")
        out.append(row)
    label = schema.get("label")
    if label and (label["name"], COMPARATOR) in findings.measured:
        name = label["name"]
        hit = (name, COMPARATOR) in crossed
        out.append(
            FeatureDistance(
                name,
                "base rate change",
                findings.measured[(name, COMPARATOR)],
                threshold(label, COMPARATOR),
                crossed=hit,
                status="CROSSED" if hit else "ok",
            )
        )
    return out


def _scored(day_frame, predictions):
    """The day's trips that have a prediction: (their probabilities, their labels), with notes on the others."""
    frame = day_frame.assign(unique_key=day_frame["unique_key"].astype(str))
    served = predictions.assign(unique_key=predictions["unique_key"].astype(str))
    notes = []
    duplicated = int(served["unique_key"].duplicated().sum())
    if duplicated:
        notes.append(f"{duplicated} trips were scored more than once: their last prediction counts")
        served = served.drop_duplicates("unique_key", keep="last")
    joined = frame.assign(_label=label_of(frame)).merge(served[["unique_key", "probability"]], on="unique_key")
    if len(joined) < len(frame):
        notes.append(f"{len(frame) - len(joined)} of the day's {len(frame)} trips have no prediction")
    if len(joined) < len(served):
        notes.append(f"{len(served) - len(joined)} predictions are of trips not among the day's")
    return joined["probability"].to_numpy(dtype=float), joined["_label"].to_numpy(dtype=bool), notes


def monitor_day(
    day_frame,
    predictions,
    training_statistics: dict,
    schema: dict,
    eval_calibration: list[dict],
    eval_auc: float | None,
    thresholds: MonitorThresholds | None = None,
    *,
    day: str,
) -> MonitorResult:
    """Monitor one day: `day_frame` the day's trips (window columns), `predictions` the served model's
    (unique_key, model_version, probability), against the model's training window (its statistics,
    as read_training_reference gives them, and its schema) and its evaluation (read_eval_reference)."""
    thresholds = thresholds or MonitorThresholds()
    missing = {"unique_key", "model_version", "probability"} - set(predictions.columns)
    if missing:
        raise ValueError(f"the predictions lack the columns {', '.join(sorted(missing))}")
    reference = whole_window(training_statistics)
    served = dataset_statistics(day_frame)
    compared = day_schema(schema)

    schema_anomalies = check_schema(served, schema)
    findings = compare(served, reference, compared, COMPARATOR, AGAINST)
    said_missing = {a.column for a in schema_anomalies if a.kind == "missing"}
    crossed = [a.line for a in schema_anomalies]
    crossed += [a.line for a in findings.anomalies if not (a.kind == "missing" and a.column in said_missing)]
    notes = list(findings.notes)

    drift = prediction_drift(predictions["probability"], eval_calibration)
    if drift.count >= thresholds.min_rows and drift.js is not None and drift.js > thresholds.prediction_js:
        crossed.append(
            f"predictions: the served probabilities drifted from the eval split's (Jensen-Shannon divergence "
            f"{drift.js:.3f} > {thresholds.prediction_js}; mean {drift.reference_mean:.3f} -> {drift.mean:.3f})"
        )
    elif drift.count < thresholds.min_rows:
        notes.append(f"prediction drift not judged: {drift.count} predictions, fewer than {thresholds.min_rows}")

    probabilities, labels, scoring_notes = _scored(day_frame, predictions)
    notes += scoring_notes
    quality = realized_quality(probabilities, labels)
    if quality is None:
        notes.append(f"realized AUC not measured: the {len(labels)} scored trips are not of both classes")
    elif quality.count < thresholds.min_rows:
        notes.append(f"realized quality not judged: {quality.count} scored trips, fewer than {thresholds.min_rows}")
    elif eval_auc is not None and eval_auc - quality.auc > thresholds.auc_drop:
        crossed.append(
            f"realized AUC {quality.auc:.4f} on {quality.count} trips is {eval_auc - quality.auc:.4f} below the "
            f"eval AUC {eval_auc:.4f} (at most {thresholds.auc_drop} allowed)"
        )

    versions = sorted({str(v) for v in predictions["model_version"].dropna()})
    if len(versions) > 1:
        notes.append(f"the day was scored by {len(versions)} model versions: {', '.join(versions)}")
    return MonitorResult(
        day=str(day),
        model_version=", ".join(versions),
        rows=len(day_frame),
        scored=len(labels),
        features=_distances(served, reference, compared, findings),
        unseen=_unseen(served, schema),
        prediction=drift,
        quality=quality,
        eval_auc=eval_auc,
        thresholds=thresholds,
        crossed=crossed,
        notes=notes,
    )


def append_history(history_dir: str, row: dict) -> str:
    """Record a day's row (MonitorResult.history_row) as `<history_dir>/<day>.json`, replacing a
    rerun's, and rewrite history.csv (taxi_pipeline.history); returns the CSV's path."""
    return write_history(history_dir, row)


def read_history(history_dir: str) -> list[dict]:
    """Every recorded day's row, by day (from the JSON rows: the CSV has text for numbers)."""
    rows = [files.read_json(p) for p in files.glob(f"{history_dir.rstrip('/')}/*.json")]
    return sorted(rows, key=lambda row: row[HISTORY_KEY])
