"""The TFT transform: a Beam pipeline from window CSVs to a transform graph and transformed TFRecords.

    python -m taxi_model.transform --train '<glob>' --eval '<glob>' --variant standard \\
        --output <dir> [Beam pipeline options, e.g. --runner=FnApiRunner]

Analyzes the train split only (vocabularies, quantiles and z-score moments come from train) and
applies the result to both splits. Writes the layout of `transform_layout`, atomically:

    <output>/transform_graph/                       TFT transform graph + raw and transformed schemas
    <output>/transformed/{train,eval}-*.tfrecord.gz  transformed tf.Examples (gzipped)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import taxi_model  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# isort: split
import apache_beam as beam  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tensorflow_transform.beam as tft_beam  # noqa: E402
from tensorflow_transform.tf_metadata import metadata_io  # noqa: E402
from tfx_bsl.coders import example_coder  # noqa: E402
from tfx_bsl.public import tfxio  # noqa: E402

from taxi_model import (  # noqa: E402
    features,
    fileio,
    step_logging,  # noqa: E402
    variants,
)
from taxi_model import transform_layout as layout  # noqa: E402
from taxi_model.beam_options import BATCH_SIZE, pipeline_options  # noqa: E402


def _read_csv(pipeline: beam.Pipeline, label: str, file_pattern: str):
    csv = tfxio.CsvTFXIO(
        file_pattern,
        column_names=list(features.RAW_COLUMN_NAMES),
        schema=features.raw_schema(),
        skip_header_lines=1,  # per file: every part-*.csv has its own header
        telemetry_descriptors=["taxi_model"],
    )
    return pipeline | f"Read{label}" >> csv.BeamSource(batch_size=BATCH_SIZE), csv.TensorAdapterConfig()


def _write_examples(transformed_dataset, split: str, output_dir: str):
    record_batches, _ = transformed_dataset
    label = split.capitalize()
    return (
        record_batches
        | f"Encode{label}" >> beam.FlatMapTuple(lambda batch, _: example_coder.RecordBatchToExamples(batch))
        | f"Write{label}"
        >> beam.io.WriteToTFRecord(
            layout.transformed_prefix(output_dir, split), file_name_suffix=layout.TRANSFORMED_SUFFIX
        )
    )


def run(
    train_pattern: str, eval_pattern: str, variant_name: str, output_dir: str, beam_args: Sequence[str] = ()
) -> None:
    """Runs the transform pipeline; `output_dir` is replaced only if the whole pipeline succeeds."""
    preprocessing_fn = features.make_preprocessing_fn(variant_name)
    with fileio.atomic_output_dir(output_dir) as staging_dir:
        transform_graph_dir = layout.transform_graph_dir(staging_dir)
        with (
            beam.Pipeline(options=pipeline_options(beam_args)) as pipeline,
            tft_beam.Context(temp_dir=f"{staging_dir}/tft_tmp", desired_batch_size=BATCH_SIZE),
        ):
            raw_train = _read_csv(pipeline, "Train", train_pattern)
            raw_eval = _read_csv(pipeline, "Eval", eval_pattern)
            transformed_train, transform_fn = raw_train | tft_beam.AnalyzeAndTransformDataset(
                preprocessing_fn, output_record_batches=True
            )
            transformed_eval = (raw_eval, transform_fn) | tft_beam.TransformDataset(output_record_batches=True)
            _ = transform_fn | tft_beam.WriteTransformFn(transform_graph_dir)
            _write_examples(transformed_train, "train", staging_dir)
            _write_examples(transformed_eval, "eval", staging_dir)
        # WriteTransformFn writes only the transformed schema; TFTransformOutput.raw_feature_spec()
        # (used by the serving signatures) reads the raw one from here.
        metadata_io.write_metadata(
            tft.DatasetMetadata(features.raw_schema()),
            f"{transform_graph_dir}/{tft.TFTransformOutput.RAW_METADATA_DIR}",
        )
        fileio.remove_dir(f"{staging_dir}/tft_tmp")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="glob of the train CSV files")
    parser.add_argument("--eval", required=True, help="glob of the eval CSV files")
    parser.add_argument("--variant", required=True, choices=sorted(variants.VARIANTS))
    parser.add_argument("--output", required=True, help="output dir, replaced atomically")
    args, beam_args = parser.parse_known_args(argv)
    run(args.train, args.eval, args.variant, args.output, beam_args)


if __name__ == "__main__":
    step_logging.configure()
    main()
