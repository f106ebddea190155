"""Is the exported model servable? The last check of a model before it is pushed.

    python -m taxi_model.export_check --model <SavedModel> --eval '<raw eval CSV glob>' --output <dir>

Evaluation judges how good a model is; this judges whether its *export* works as the server will
use it: loaded from disk on its own (as TF-Serving loads it), called through `serving_default`
on serialized raw tf.Examples of real eval rows, exactly as clients send them. It fails a model
whose export
- does not load, or has no `serving_default` taking `examples`;
- raises on real rows, or answers with the wrong shape;
- answers with something other than a probability (NaN, inf, outside [0, 1]);
- answers (nearly) the same for every row: a constant model says nothing;
- is skewed: its mean predicted probability is far from the rate of big tippers in the eval rows
  (a model that learned against a broken transform, or whose export lost its preprocessing);
- has no `classification` signature (TF-Serving's Classify, REST `:classify`), or one that does not
  answer serving_default's probabilities as its scores (taxi_model.serving_contract).

Writes `report.json` ({"servable": bool, "reasons": [...], "stats": {...}}) atomically under
--output and logs one line per reason. Exits 0 when it reached a verdict (push reads it and
skips an unservable model, saying why), non-zero only when the check itself could not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split

import numpy as np
import tensorflow as tf

from taxi_model import features, step_logging
from taxi_model.columns import read_rows
from taxi_model.fileio import atomic_output_dir
from taxi_model.serving_contract import (
    CLASS_LABELS,
    CLASSES_KEY,
    CLASSIFICATION_SIGNATURE,
    CLASSIFY_INPUT_KEY,
    SCORES_KEY,
)

SAMPLE_ROWS = 1000
MIN_STD = 1e-3  # predictions spread less than this across real rows: a constant model
MAX_MEAN_GAP = 0.15  # |mean prediction - positive rate| above this: a skewed model
MAX_SCORE_GAP = 1e-5  # |classification score - serving_default's| above this: the two disagree
log = logging.getLogger("taxi_model.export_check")


@dataclass
class ExportCheck:
    servable: bool
    reasons: list[str] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)

    def lines(self, name: str) -> list[str]:
        head = f"{name}: export {'SERVABLE' if self.servable else 'NOT SERVABLE'}"
        return [head] + [f"{name}: {reason}" for reason in self.reasons]


def _classification_reasons(loaded, batch: tf.Tensor, probabilities: np.ndarray) -> list[str]:
    """Why the classification signature is not serving_default's answer as Classify's (none if it is)."""
    if CLASSIFICATION_SIGNATURE not in loaded.signatures:
        return [f"no {CLASSIFICATION_SIGNATURE} signature: :classify requests would fail"]
    try:
        outputs = loaded.signatures[CLASSIFICATION_SIGNATURE](**{CLASSIFY_INPUT_KEY: batch})
        classes, scores = outputs[CLASSES_KEY].numpy(), outputs[SCORES_KEY].numpy().astype(float)
    except Exception as error:  # noqa: BLE001 - a signature that does not answer is the verdict
        return [f"the {CLASSIFICATION_SIGNATURE} signature does not answer: {_first_line(error)}"]
    if classes.shape != (len(probabilities), len(CLASS_LABELS)) or (classes != np.array(CLASS_LABELS, object)).any():
        return [f"the {CLASSIFICATION_SIGNATURE} signature's classes are not {list(CLASS_LABELS)} on every row"]
    expected = np.stack([1 - probabilities, probabilities], axis=1)
    gap = np.abs(scores - expected).max() if scores.shape == expected.shape else math.inf
    if not gap <= MAX_SCORE_GAP:  # NaN too
        return [
            f"the {CLASSIFICATION_SIGNATURE} signature disagrees with serving_default: its scores "
            f"{list(scores.shape)} differ from (1 - p, p) by up to {gap:.4g}"
        ]
    return []


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: " + (str(error).strip().splitlines() or [""])[0][:300]


def _predict(model_dir: str, serialized: list[bytes]) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """serving_default's probabilities for the examples, their labels if transform_features gives
    them, and why the classification signature disagrees (nothing if it agrees)."""
    loaded = tf.saved_model.load(model_dir)
    serve = loaded.signatures["serving_default"]
    batch = tf.constant(serialized)
    outputs = serve(examples=batch)
    if len(outputs) != 1:
        raise ValueError(f"serving_default has {len(outputs)} outputs {sorted(outputs)}, expected one probability")
    (probabilities,) = outputs.values()
    probabilities = probabilities.numpy().astype(float)
    if probabilities.shape not in ((len(serialized),), (len(serialized), 1)):
        raise ValueError(f"serving_default answered shape {probabilities.shape} for {len(serialized)} examples")
    labels = None
    if "transform_features" in loaded.signatures:
        transformed = loaded.signatures["transform_features"](examples=batch)
        if features.LABEL_KEY in transformed:
            labels = transformed[features.LABEL_KEY].numpy().reshape(-1).astype(float)
    probabilities = probabilities.reshape(-1)
    return probabilities, labels, _classification_reasons(loaded, batch, probabilities)


def check(
    model_dir: str, rows: list[dict[str, str]], min_std: float = MIN_STD, max_mean_gap: float = MAX_MEAN_GAP
) -> ExportCheck:
    if not rows:
        raise ValueError("no eval rows to check the export with")
    serialized = [features.raw_example(r).SerializeToString() for r in rows]
    try:
        predictions, labels, classification_reasons = _predict(model_dir, serialized)
    except Exception as error:  # noqa: BLE001 - any failure to load or call is the verdict
        return ExportCheck(False, [f"the export does not load or answer through serving_default: {_first_line(error)}"])
    finite = np.isfinite(predictions)
    stats = {"rows": float(len(predictions)), "non_finite": float((~finite).sum())}
    reasons = []
    if not finite.all():
        reasons.append(f"{int((~finite).sum())} of {len(predictions)} predictions are NaN or infinite")
    values = predictions[finite]
    if len(values):
        stats.update(
            mean=float(values.mean()), std=float(values.std()), min=float(values.min()), max=float(values.max())
        )
        if values.min() < 0 or values.max() > 1:
            reasons.append(
                f"predictions outside [0, 1] (min {values.min():.4f}, max {values.max():.4f}): not probabilities"
            )
        if values.std() < min_std:
            reasons.append(
                f"constant outputs: predictions spread {values.std():.2e} over {len(values)} real rows "
                f"(at least {min_std:g} expected), all near {values.mean():.4f}"
            )
        if labels is not None:
            rate = float(labels.mean())
            stats["positive_rate"] = rate
            gap = abs(float(values.mean()) - rate)
            if gap > max_mean_gap:
                reasons.append(
                    f"skewed outputs: mean prediction {values.mean():.4f} vs {rate:.4f} big tippers "
                    f"in the eval rows (gap {gap:.4f} > {max_mean_gap})"
                )
    reasons.extend(classification_reasons)  # last: a broken serving_default's own reason comes first
    servable = not reasons
    if servable:
        reasons.append(
            f"{len(values)} real rows through serving_default: probabilities, spread "
            f"{stats['std']:.3f}, mean {stats['mean']:.3f}"
            + (f" vs {stats['positive_rate']:.3f} positives" if "positive_rate" in stats else "")
            + f"; {CLASSIFICATION_SIGNATURE} agrees"
        )
    return ExportCheck(servable, reasons, {k: v for k, v in stats.items() if not math.isnan(v)})


def run(model: str, eval_pattern: str, output: str, rows: int = SAMPLE_ROWS) -> ExportCheck:
    sample = read_rows(eval_pattern, limit=rows)
    result = check(model, sample)
    with atomic_output_dir(output) as staging:
        with tf.io.gfile.GFile(f"{staging}/report.json", "w") as f:  # closed: flushed to gs:// too
            f.write(json.dumps(asdict(result), indent=1))
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--eval", required=True, help="glob of the raw eval CSV files")
    parser.add_argument("--output", required=True)
    parser.add_argument("--variant", default="model", help="only names the log lines")
    parser.add_argument("--rows", type=int, default=SAMPLE_ROWS)
    args = parser.parse_args(argv)
    step_logging.configure()
    result = run(args.model, args.eval, args.output, args.rows)
    for line in result.lines(args.variant):
        log.info(line)


if __name__ == "__main__":
    main()
