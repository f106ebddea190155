"""Batch scoring: the served model's big-tip probability for every trip of a window, with Beam's RunInference.

    python -m taxi_model.batch_score --trips '<raw window CSV glob>' --model <SavedModel dir> \\
        --model_version <int> --day <YYYY-MM-DD> --scored_at <ISO-8601 UTC> --output <dir> [Beam pipeline args]

The step TFX's BulkInferrer is (the Kubeflow taxi pipeline's "infer" step): the model's own
`serving_default` signature, called on the serialized raw tf.Examples that online clients send
(taxi_model.features.raw_example), so a batch score is the answer the model server gives for the row.
Writes atomically under --output (a rerun replaces it; a failed run leaves the previous one):

    predictions-*.csv   day,unique_key,model_version,probability,scored_at (a header in every shard; the
                        columns of the warehouse's predictions table, taxi_pipeline.predictions);
                        the probability with float32's full precision (9 significant digits)
    summary.json        {"rows": n, "model_version": v, "mean_probability": m (null without rows)}

The set of rows is a function of the arguments: see `DeterministicBatches` for why batches are not
formed by `BatchElements`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from taxi_model import features, step_logging
from taxi_model.beam_options import BATCH_SIZE, pipeline_options
from taxi_model.columns import RAW_COLUMN_NAMES
from taxi_model.fileio import atomic_output_dir
from taxi_model.serving_contract import OUTPUT_KEY, SERVING_INPUT_KEY, SERVING_SIGNATURE

HEADER = "day,unique_key,model_version,probability,scored_at"
PREDICTIONS_PREFIX, PREDICTIONS_SUFFIX = "predictions", ".csv"
SUMMARY_FILE = "summary.json"
# A batch of more rows than this (only possible when keys repeat: a batch's rows are a hash share of
# the keys, BATCH_SIZE of them on average) is cut into pieces of at most this many rows, in key order.
MAX_BATCH_SIZE = 2 * BATCH_SIZE
# Every float32 is an integer multiple of 2**-149 (its smallest subnormal).
_FLOAT32_SCALE_BITS = 149
log = logging.getLogger("taxi_model.batch_score")


def _day(text: str) -> str:
    """argparse type of --day: a calendar date, kept as given."""
    import datetime

    return datetime.date.fromisoformat(text).isoformat()


def utc_timestamp(text: str) -> str:
    """argparse type of --scored_at: an ISO-8601 timestamp with a UTC offset, kept as given."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 timestamp: {text!r}") from None
    if moment.utcoffset() != timedelta(0):
        raise argparse.ArgumentTypeError(f"not a UTC timestamp (+00:00 or Z): {text!r}")
    return text


def parse_line(line: str) -> dict[str, str]:
    """A data line of a window CSV (the header already skipped) as its row: column -> text, '' = NULL."""
    (fields,) = csv.reader([line])
    if len(fields) != len(RAW_COLUMN_NAMES):
        raise ValueError(f"a window CSV row has {len(RAW_COLUMN_NAMES)} columns, not {len(fields)}: {line!r}")
    return dict(zip(RAW_COLUMN_NAMES, fields, strict=True))


def keyed_examples(line: str) -> Iterator[tuple[str, bytes]]:
    """(unique_key, serialized raw tf.Example) of a CSV line; nothing for a blank line."""
    if line.strip():
        row = parse_line(line)
        # Deterministic serialization: the bytes order rows of the same key (DeterministicBatches).
        yield row[features.EXAMPLE_KEY], features.raw_example(row).SerializeToString(deterministic=True)


def prediction_line(unique_key: str, probability: float, model_version: int, day: str, scored_at: str) -> str:
    """A CSV line of the output (no line end); 9 significant digits give a float32 back exactly."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([day, unique_key, model_version, f"{probability:.9g}", scored_at])
    return out.getvalue()


def batch_of(unique_key: str, batches: int) -> int:
    """The batch of a key: a stable hash (not Python's `hash`, salted per process) modulo the count."""
    return zlib.crc32(unique_key.encode()) % batches


def _batch_keys(pair: tuple[str, bytes], rows: int) -> tuple[int, tuple[str, bytes]]:
    return batch_of(pair[0], max(1, math.ceil(rows / BATCH_SIZE))), pair


def _sorted_batches(group: tuple[int, Iterable[tuple[str, bytes]]]) -> Iterator[list[tuple[str, bytes]]]:
    pairs = sorted(group[1])  # a GroupByKey's values come in no fixed order
    for start in range(0, len(pairs), MAX_BATCH_SIZE):
        yield pairs[start : start + MAX_BATCH_SIZE]


class DeterministicBatches(beam.PTransform):
    """(unique_key, example) pairs into batches that depend only on the set of pairs: about
    BATCH_SIZE rows each, a row's batch a hash of its key, rows sorted by key within a batch.

    Why not RunInference's own `BatchElements`, even with a fixed size: it cuts a batch short at the
    end of every bundle, and bundles differ between runs (Dataflow splits and rebalances work). The
    model's answer for a row depends, in its last bit, on the batch it is computed in, and on its
    place in it (measured on the test model: 845 of 1,200 rows differ by 1-2 float32 ulps between
    batches of 1 and of 1,000; 3 of 300 between the same batch in two orders), and the output keeps
    every bit. The same batch in the same order gives the same bits.
    """

    def expand(self, pairs):
        rows = pairs | "Count" >> beam.combiners.Count.Globally()
        return (
            pairs
            | "BatchKey" >> beam.Map(_batch_keys, beam.pvalue.AsSingleton(rows))
            | "Group" >> beam.GroupByKey()
            | "Sort" >> beam.FlatMap(_sorted_batches)
        )


class ServingSignatureHandler(ModelHandler[bytes, float, Any]):
    """RunInference's handler of the exported model: loaded with `tf.saved_model.load` (as the model
    server and TF-Serving load it) and called through `serving_default` on serialized raw tf.Examples.

    Not Beam's TFModelHandlerTensor: it loads the model as a Keras model (whose call takes the
    transformed features, not examples) and imports tensorflow_hub, which the runtime does not have.
    """

    def __init__(self, model_path: str):
        super().__init__()
        self._model_path = model_path

    def load_model(self):
        return tf.saved_model.load(self._model_path)  # the object owns the signature's variables and tables

    def run_inference(self, batch: Sequence[bytes], model, inference_args: dict | None = None) -> list[float]:
        outputs = model.signatures[SERVING_SIGNATURE](**{SERVING_INPUT_KEY: tf.constant(list(batch), tf.string)})
        probabilities = outputs[OUTPUT_KEY].numpy().reshape(-1)  # [batch, 1]
        if len(probabilities) != len(batch):
            raise ValueError(f"{SERVING_SIGNATURE} answered {len(probabilities)} values for {len(batch)} examples")
        return [float(p) for p in probabilities]  # a float32 is exactly a Python float

    def get_num_bytes(self, batch: Sequence[bytes]) -> int:
        return sum(len(example) for example in batch)  # not the default's pickling of the batch

    def get_metrics_namespace(self) -> str:
        return "taxi_batch_score"


class ExactMean(beam.CombineFn):
    """(rows, mean) of float32 probabilities, the same in any order of summing: each is an integer
    number of 2**-149, summed as Python ints, divided once (correctly rounded). A float sum would
    depend on how the runner split and merged the rows."""

    def create_accumulator(self) -> tuple[int, int]:
        return 0, 0

    def add_input(self, accumulator: tuple[int, int], probability: float) -> tuple[int, int]:
        rows, total = accumulator
        return rows + 1, total + int(math.ldexp(float(np.float32(probability)), _FLOAT32_SCALE_BITS))

    def merge_accumulators(self, accumulators: Iterable[tuple[int, int]]) -> tuple[int, int]:
        rows = total = 0
        for more_rows, more_total in accumulators:
            rows, total = rows + more_rows, total + more_total
        return rows, total

    def extract_output(self, accumulator: tuple[int, int]) -> tuple[int, float | None]:
        rows, total = accumulator
        return rows, (total / (rows << _FLOAT32_SCALE_BITS) if rows else None)


def summary(rows_and_mean: tuple[int, float | None], model_version: int) -> dict:
    rows, mean = rows_and_mean
    return {"rows": rows, "model_version": model_version, "mean_probability": mean}


def _write_json(content: dict, path: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:  # closed: flushed to gs:// too
        f.write(json.dumps(content, indent=1))


def run(
    trips: str, model: str, model_version: int, day: str, scored_at: str, output: str, beam_args: Sequence[str] = ()
) -> dict:
    """Scores the trips into `output` (replaced whole); returns the summary."""
    with atomic_output_dir(output) as staging:
        with beam.Pipeline(options=pipeline_options(beam_args)) as pipeline:
            scores = (
                pipeline
                | "Read" >> beam.io.ReadFromText(trips, skip_header_lines=1)  # per file: each has its header
                | "Examples" >> beam.FlatMap(keyed_examples)
                | "Batch" >> DeterministicBatches()
                | "Score" >> RunInference(KeyedModelHandler(ServingSignatureHandler(model)).with_no_batching())
            )
            _ = (
                scores
                | "Format"
                >> beam.MapTuple(
                    lambda key, probability: prediction_line(key, probability, model_version, day, scored_at)
                )
                | "Write"
                >> beam.io.WriteToText(
                    f"{staging}/{PREDICTIONS_PREFIX}", file_name_suffix=PREDICTIONS_SUFFIX, header=HEADER
                )
            )
            _ = (
                scores
                | "Probabilities" >> beam.Values()
                | "Mean" >> beam.CombineGlobally(ExactMean())
                | "Summary" >> beam.Map(summary, model_version=model_version)
                | "WriteSummary" >> beam.Map(_write_json, f"{staging}/{SUMMARY_FILE}")
            )
        with tf.io.gfile.GFile(f"{staging}/{SUMMARY_FILE}") as f:
            return json.load(f)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trips", required=True, help="glob of the raw window CSV files to score")
    parser.add_argument("--model", required=True, help="SavedModel dir of the served version")
    parser.add_argument("--model_version", type=int, required=True, help="the served version, written on every row")
    parser.add_argument("--day", type=_day, required=True, help="the scored day (YYYY-MM-DD), written on every row")
    parser.add_argument("--scored_at", type=utc_timestamp, required=True, help="UTC time written on every row")
    parser.add_argument("--output", required=True, help="output dir, replaced atomically")
    args, beam_args = parser.parse_known_args(argv)
    step_logging.configure()
    version_dir = os.path.basename(args.model.rstrip("/"))
    if version_dir.isdigit() and int(version_dir) != args.model_version:  # TF-Serving's <base>/<version>/
        parser.error(f"--model_version {args.model_version} is not the version of --model {args.model}")
    scored = run(args.trips, args.model, args.model_version, args.day, args.scored_at, args.output, beam_args)
    log.info(
        "scored %d trips with version %d (mean probability %s) into %s",
        scored["rows"],
        args.model_version,
        scored["mean_probability"],
        args.output,
    )


if __name__ == "__main__":
    main()
