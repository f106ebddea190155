"""Recent window or all history? Compares two models on the newest data (Kubeflow taxi workflow 2).

    python -m taxi_model.window_comparison --recent_model <SavedModel> --long_model <SavedModel> \
        --eval '<raw CSV glob of the newest window>' \
        --recent_evaluation <dir> --long_evaluation <dir> --output <dir> \
        [--bootstrap 1000] [--seed 0] [--min_slice_examples 20] [--stable_model <SavedModel>]

Both models were evaluated by TFMA (taxi_model.evaluate) on the same newest-data eval set; their
evaluation dirs hold metrics.json. This step adds what TFMA's per-model numbers cannot say: whether
the AUC difference is larger than the noise of a few hundred trips. It scores the eval rows with
both models, computes each AUC (rank-based, ties counted half) and a paired bootstrap interval of
the difference recent - long (the same resampled trips for both models), and decides:
    "recent"                     the 95% interval lies above 0
    "long"                       the 95% interval lies below 0
    "no significant difference"  otherwise
The labels come from a model's `transform_features` signature, so the label rule is stated only
in the feature contract. The per-slice table is read from the two metrics.json files (TFMA's AUC,
computed over 10,000 thresholds, may differ from the exact one in the 4th decimal).

With --stable_model (the version the champion model serves at `stable`, when there is one), the
run's candidate (the verdict's winner; with no significant difference, the higher AUC) is also
compared with it on the same trips, by the same paired bootstrap: the DAG offers the candidate for
promotion only when it is significantly better (taxi_pipeline.deployment).

Writes atomically under --output:
    comparison.json     verdict, sentence, AUCs with the interval, example count, bootstrap settings,
                        min_slice_examples, slice table (depends only on the run's data and models)
    comparison.txt      the sentence and verdict, then the slice table
    versus_stable.json  the candidate against the served model (depends on what is served then)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from taxi_model import step_logging

RECENT, LONG, NO_DIFFERENCE = "recent", "long", "no significant difference"
CANDIDATE = "candidate"  # the model name in taxi_model.evaluate's metrics.json
SLICE_METRICS = ("auc", "binary_accuracy")
MIN_EXAMPLES = 10  # fewer eval rows than this cannot say anything about an AUC difference
BATCH = 4096
log = logging.getLogger("taxi_model.window_comparison")


class ComparisonError(ValueError):
    """The comparison cannot be made (no rows, one class, missing metrics): a message for the operator."""


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------


def _check_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.isin(labels, (0, 1)).all():
        raise ComparisonError("labels must be a flat sequence of 0 and 1")
    return labels.astype(np.int64)


def _check_scores(scores, n: int, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape != (n,):
        raise ComparisonError(f"{name}: {scores.shape[0]} scores for {n} labels")
    if not np.isfinite(scores).all():
        raise ComparisonError(f"{name}: {int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    return scores


def _weighted_auc(labels: np.ndarray, groups: np.ndarray, n_groups: int, weights: np.ndarray) -> float:
    """AUC with per-example weights (bootstrap counts); `groups` = rank of each distinct score.

    AUC = P(score of a positive > score of a negative) + 0.5 P(equal): per distinct score, the
    positives' weight times the negatives' weight strictly below plus half of those tied.
    """
    positives = np.bincount(groups, weights=weights * labels, minlength=n_groups)
    negatives = np.bincount(groups, weights=weights * (1 - labels), minlength=n_groups)
    total_pos, total_neg = positives.sum(), negatives.sum()
    if total_pos == 0 or total_neg == 0:
        return math.nan
    below = np.cumsum(negatives) - negatives
    return float(np.dot(positives, below + 0.5 * negatives) / (total_pos * total_neg))


def auc(labels, scores) -> float:
    """Area under the ROC curve (Mann-Whitney U / (P N)); tied scores count half.

    Raises ComparisonError if the labels hold a single class (the AUC is undefined).
    """
    labels = _check_labels(labels)
    scores = _check_scores(scores, len(labels))
    if len(np.unique(labels)) < 2:
        held = f"are all {labels[0]}" if len(labels) else "are none"
        raise ComparisonError(f"AUC needs both classes; the {len(labels)} labels {held}")
    distinct, groups = np.unique(scores, return_inverse=True)
    return _weighted_auc(labels, groups.reshape(-1), len(distinct), np.ones(len(labels)))


@dataclass(frozen=True)
class BootstrapResult:
    difference: float  # AUC(a) - AUC(b) on all examples
    ci_low: float
    ci_high: float
    auc_a: float
    auc_b: float
    resamples: int  # asked for
    used: int  # resamples with both classes
    seed: int
    confidence: float


def paired_bootstrap_difference(
    labels, scores_a, scores_b, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> BootstrapResult:
    """AUC(a) - AUC(b) and its percentile bootstrap interval, resampling examples for both at once.

    Each resample draws len(labels) example indices with replacement (numpy's default_rng(seed),
    so the result is deterministic); resamples that hold a single class are skipped.
    """
    labels = _check_labels(labels)
    scores_a = _check_scores(scores_a, len(labels), "scores_a")
    scores_b = _check_scores(scores_b, len(labels), "scores_b")
    if resamples < 1:
        raise ComparisonError("the bootstrap needs at least one resample")
    if not 0 < confidence < 1:
        raise ComparisonError("confidence must be between 0 and 1")
    auc_a, auc_b = auc(labels, scores_a), auc(labels, scores_b)
    n = len(labels)
    ranked = []
    for scores in (scores_a, scores_b):
        distinct, groups = np.unique(scores, return_inverse=True)
        ranked.append((groups.reshape(-1), len(distinct)))
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        a, b = (_weighted_auc(labels, groups, n_groups, counts) for groups, n_groups in ranked)
        if not math.isnan(a):  # nan: a single class was drawn
            differences.append(a - b)
    if not differences:
        raise ComparisonError(
            f"all {resamples} bootstrap resamples drew a single class; "
            f"the eval set has too few examples of its minority class"
        )
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.array(differences), [tail, 1 - tail])
    return BootstrapResult(
        difference=auc_a - auc_b,
        ci_low=float(low),
        ci_high=float(high),
        auc_a=auc_a,
        auc_b=auc_b,
        resamples=resamples,
        used=len(differences),
        seed=seed,
        confidence=confidence,
    )


def verdict(result: BootstrapResult) -> str:
    if result.ci_low > 0:
        return RECENT
    if result.ci_high < 0:
        return LONG
    return NO_DIFFERENCE


def sentence(result: BootstrapResult, examples: int) -> str:
    """One line: the recent-window model's AUC is 0.031 higher (95% CI 0.012 to 0.050) on 412 trips of ..."""
    d = result.difference
    if round(d, 3) == 0:
        change = "the same as the long-history model's"
    else:
        change = f"{abs(d):.3f} {'higher' if d > 0 else 'lower'}"
    level = f"{result.confidence * 100:g}%"
    return (
        f"the recent-window model's AUC is {change} ({level} CI {result.ci_low:.3f} to {result.ci_high:.3f}) "
        f"on {examples} trips of the newest window"
    )


def _number(value) -> float | None:
    """A metric as a JSON-safe float (None for a missing or NaN value)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _slice_order(name: str):
    """overall first, then by feature(s), then by value (numbers numerically)."""
    if name == "overall":
        return (0, (), ())
    parts = [part.partition("=") for part in name.split(" x ")]
    values = tuple((0, float(v), "") if re.fullmatch(r"-?\d+(\.\d+)?", v) else (1, 0.0, v) for _, _, v in parts)
    return (1, tuple(k for k, _, _ in parts), values)


def slice_rows(recent_metrics: Mapping, long_metrics: Mapping, min_examples: int = 20) -> list[dict]:
    """The per-slice table from two taxi_model.evaluate metrics.json dicts (their "candidate" model).

    Slices present in both with at least `min_examples` examples in each (overall always, when
    present), overall first. Each row: slice, example_count, and for auc and binary_accuracy the
    recent and long values and their difference recent - long (None where a value is missing).
    """
    tables = []
    for which, metrics in (("recent", recent_metrics), ("long", long_metrics)):
        if CANDIDATE not in metrics:
            raise ComparisonError(
                f"the {which} evaluation's metrics.json has no {CANDIDATE!r} model "
                f"(models: {sorted(metrics) or 'none'})"
            )
        tables.append(metrics[CANDIDATE])
    recent, long = tables
    rows = []
    for name in sorted(set(recent) & set(long), key=_slice_order):
        counts = [_number(t[name].get("example_count")) for t in (recent, long)]
        if name != "overall" and (None in counts or min(counts) < min_examples):
            continue
        if counts[0] != counts[1]:
            log.warning("slice %s: %s examples in the recent evaluation, %s in the long one", name, *counts)
        known = [c for c in counts if c is not None]
        row = {"slice": name, "example_count": int(min(known)) if known else None}
        for metric in SLICE_METRICS:
            recent_value, long_value = _number(recent[name].get(metric)), _number(long[name].get(metric))
            row[f"recent_{metric}"], row[f"long_{metric}"] = recent_value, long_value
            row[f"{metric}_difference"] = None if None in (recent_value, long_value) else recent_value - long_value
        rows.append(row)
    return rows


_COLUMNS = (
    ("slice", "slice", "{}"),
    ("example_count", "examples", "{}"),
    ("recent_auc", "auc recent", "{:.4f}"),
    ("long_auc", "auc long", "{:.4f}"),
    ("auc_difference", "auc diff", "{:+.4f}"),
    ("recent_binary_accuracy", "acc recent", "{:.4f}"),
    ("long_binary_accuracy", "acc long", "{:.4f}"),
    ("binary_accuracy_difference", "acc diff", "{:+.4f}"),
)


def format_table(rows: Sequence[Mapping]) -> str:
    """The slice rows as an aligned text table (slice left-aligned, numbers right-aligned)."""
    header = [title for _, title, _ in _COLUMNS]
    cells = [[("-" if row.get(key) is None else fmt.format(row[key])) for key, _, fmt in _COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in [header] + cells) for i in range(len(header))]

    def line(values):
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=False))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(c) for c in cells])


def comparison(result: BootstrapResult, examples: int, slices: list[dict], min_slice_examples: int) -> dict:
    """The content of comparison.json."""
    return {
        "verdict": verdict(result),
        "sentence": sentence(result, examples),
        "auc": {
            "recent": result.auc_a,
            "long": result.auc_b,
            "difference": result.difference,
            "ci_low": result.ci_low,
            "ci_high": result.ci_high,
        },
        "examples": examples,
        "bootstrap": {
            "resamples": result.resamples,
            "used": result.used,
            "seed": result.seed,
            "confidence": result.confidence,
        },
        "min_slice_examples": min_slice_examples,
        "slices": slices,
    }


def candidate_of(report: Mapping) -> tuple[str, str]:
    """The run's candidate for promotion and why: the verdict's winner, else the higher AUC."""
    if report["verdict"] in (RECENT, LONG):
        return report["verdict"], "the verdict's winner"
    best = RECENT if report["auc"]["recent"] >= report["auc"]["long"] else LONG
    return best, "no significant difference between the two: the higher AUC"


def versus_stable(report: Mapping, result: BootstrapResult | None, stable_version: str | None) -> dict:
    """The content of versus_stable.json: the candidate against the served model (`result`: the paired
    bootstrap of candidate - stable; None when nothing is served)."""
    candidate, why = candidate_of(report)
    head = {"candidate": candidate, "why": why}
    if result is None:
        return {**head, "stable": None, "significant": None, "sentence": "no model is served at stable to compare with"}
    d = result.difference
    change = "the same as" if round(d, 3) == 0 else f"{abs(d):.3f} {'higher' if d > 0 else 'lower'} than"
    return {
        **head,
        "stable": {"version": stable_version},
        "auc": {
            "candidate": result.auc_a,
            "stable": result.auc_b,
            "difference": d,
            "ci_low": result.ci_low,
            "ci_high": result.ci_high,
        },
        "significant": result.ci_low > 0,
        "sentence": (
            f"the {candidate}-window model's AUC is {change} the served version {stable_version}'s "
            f"({result.confidence * 100:g}% CI {result.ci_low:.3f} to {result.ci_high:.3f}) on the same trips"
        ),
    }


def comparison_text(report: Mapping) -> str:
    return (
        f"{report['sentence']}\nverdict: {report['verdict']}\n\n"
        f"per slice (TFMA's metrics; diff = recent - long; slices with fewer than "
        f"{report['min_slice_examples']} examples left out):\n"
        f"{format_table(report['slices'])}\n"
    )


# ---------------------------------------------------------------------------------------------
# I/O
# ---------------------------------------------------------------------------------------------


def probabilities(model_dir: str, serialized: Sequence[bytes]) -> np.ndarray:
    """P(big tipper) per example from the model's serving_default signature."""
    import tensorflow as tf

    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    out = [
        serve(examples=tf.constant(serialized[start : start + BATCH]))["probabilities"].numpy().reshape(-1)
        for start in range(0, len(serialized), BATCH)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def labels_of(model_dir: str, serialized: Sequence[bytes]) -> np.ndarray:
    """The labels as the feature contract defines them, from the model's transform_features signature."""
    import tensorflow as tf

    from taxi_model import features

    transform = tf.saved_model.load(model_dir).signatures["transform_features"]
    out = [
        transform(examples=tf.constant(serialized[start : start + BATCH]))[features.LABEL_KEY].numpy().reshape(-1)
        for start in range(0, len(serialized), BATCH)
    ]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def read_metrics(evaluation_dir: str, which: str) -> dict:
    import tensorflow as tf

    path = f"{evaluation_dir.rstrip('/')}/metrics.json"
    if not tf.io.gfile.exists(path):
        raise ComparisonError(f"the {which} evaluation has no metrics.json: {path}")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)  # TFMA may write NaN: Python's json reads it


def run(
    recent_model: str,
    long_model: str,
    eval_pattern: str,
    recent_evaluation: str,
    long_evaluation: str,
    output: str,
    resamples: int = 1000,
    seed: int = 0,
    min_slice_examples: int = 20,
    stable_model: str = "",
) -> dict:
    """Compares the two models (and the candidate with `stable_model`, when given), writes
    comparison.json, comparison.txt and versus_stable.json under `output`, returns the report."""
    import tensorflow as tf

    import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)
    from taxi_model import features
    from taxi_model.columns import read_rows
    from taxi_model.fileio import atomic_output_dir

    metrics = read_metrics(recent_evaluation, "recent"), read_metrics(long_evaluation, "long")
    slices = slice_rows(*metrics, min_examples=min_slice_examples)
    rows = read_rows(eval_pattern)
    if len(rows) < MIN_EXAMPLES:
        raise ComparisonError(
            f"{len(rows)} eval rows match {eval_pattern}; the comparison needs at least {MIN_EXAMPLES}"
        )
    serialized = [features.raw_example(row).SerializeToString() for row in rows]
    labels = labels_of(recent_model, serialized)
    positives = int(labels.sum())
    if positives in (0, len(labels)):
        raise ComparisonError(
            f"all {len(labels)} eval trips have {features.LABEL_KEY}={labels[0]}: AUC needs both classes"
        )
    recent_scores = probabilities(recent_model, serialized)
    long_scores = probabilities(long_model, serialized)
    result = paired_bootstrap_difference(labels, recent_scores, long_scores, resamples, seed)
    report = comparison(result, len(labels), slices, min_slice_examples)
    stable = None
    if stable_model:
        candidate_scores = recent_scores if candidate_of(report)[0] == RECENT else long_scores
        stable_scores = probabilities(stable_model, serialized)
        stable = paired_bootstrap_difference(labels, candidate_scores, stable_scores, resamples, seed)
    served = versus_stable(report, stable, stable_model.rstrip("/").rpartition("/")[2] if stable_model else None)
    with atomic_output_dir(output) as staging:
        with tf.io.gfile.GFile(f"{staging}/versus_stable.json", "w") as f:
            f.write(json.dumps(served, indent=1, allow_nan=False))
        with tf.io.gfile.GFile(f"{staging}/comparison.json", "w") as f:
            f.write(json.dumps(report, indent=1, allow_nan=False))
        with tf.io.gfile.GFile(f"{staging}/comparison.txt", "w") as f:
            f.write(comparison_text(report))
    return {**report, "versus_stable": served}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recent_model", required=True, help="SavedModel trained on the recent window")
    parser.add_argument("--long_model", required=True, help="SavedModel trained on all history")
    parser.add_argument("--eval", required=True, help="glob of the raw eval CSV files (the newest window)")
    parser.add_argument("--recent_evaluation", required=True, help="taxi_model.evaluate output of the recent model")
    parser.add_argument("--long_evaluation", required=True, help="taxi_model.evaluate output of the long model")
    parser.add_argument("--output", required=True)
    parser.add_argument("--bootstrap", type=int, default=1000, help="number of bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min_slice_examples", type=int, default=20)
    parser.add_argument("--stable_model", default="", help="the served version at stable (empty: none)")
    args = parser.parse_args(argv)
    if args.bootstrap < 1:
        parser.error("--bootstrap must be at least 1")
    step_logging.configure()
    try:
        report = run(
            args.recent_model,
            args.long_model,
            args.eval,
            args.recent_evaluation,
            args.long_evaluation,
            args.output,
            args.bootstrap,
            args.seed,
            args.min_slice_examples,
            args.stable_model,
        )
    except ComparisonError as error:  # a message, not a traceback; exit status 1
        raise SystemExit(f"window comparison: {error}") from None
    log.info("%s", report["sentence"])
    log.info("verdict: %s", report["verdict"])
    log.info("versus the served model: %s", report["versus_stable"]["sentence"])


if __name__ == "__main__":
    main()
