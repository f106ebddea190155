"""The TFT transform: a Beam pipeline from window CSVs to a transform graph and transformed TFRecords.

    python -m taxi_model.transform --train '<glob>' --eval '<glob>' --variant standard \\
        --output <dir> [Beam pipeline options, e.g. --runner=FnApiRunner]

Analyzes the train split only (vocabularies, quantiles and z-score moments come from train) and
applies the result to both splits. Both ends work in Arrow record batches of BATCH_SIZE rows: each
CSV file is read by Arrow's C++ reader, and each transformed batch is encoded and written as one
Beam element. Writes the layout of `transform_layout`, atomically:

    <output>/transform_graph/                       TFT transform graph + raw and transformed schemas
    <output>/transformed/{train,eval}-*.tfrecord.gz  transformed tf.Examples (gzipped)
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Sequence

import taxi_model  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# isort: split
import apache_beam as beam  # noqa: E402
import pyarrow as pa  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402
import tensorflow_transform.beam as tft_beam  # noqa: E402
from apache_beam.io import filebasedsink  # noqa: E402
from apache_beam.io.filesystem import CompressionTypes  # noqa: E402
from apache_beam.io.tfrecordio import _TFRecordUtil  # noqa: E402  (the TFRecord framing WriteToTFRecord uses)
from tensorflow_transform.tf_metadata import metadata_io  # noqa: E402
from tfx_bsl.coders import example_coder  # noqa: E402
from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util  # noqa: E402

from taxi_model import (  # noqa: E402
    features,
    fileio,
    step_logging,  # noqa: E402
    variants,
)
from taxi_model import transform_layout as layout  # noqa: E402
from taxi_model.beam_options import BATCH_SIZE, pipeline_options  # noqa: E402


def _raw_record_batches(path: str):
    """One window-CSV file as raw record batches of BATCH_SIZE rows (the last one shorter).

    Read by Arrow's CSV reader in C++ and handed to TFT whole: tfx_bsl's CsvTFXIO decodes line by
    line in Python, one Beam element per line, which at 1M trips cost about 40% of the transform.
    """
    batch = features.raw_record_batch(features.read_raw_file(path))
    for start in range(0, batch.num_rows, BATCH_SIZE):
        yield pa.RecordBatch.from_arrays(
            [pa.concat_arrays([column.slice(start, BATCH_SIZE)]) for column in batch.columns], schema=batch.schema
        )


def _read_csv(pipeline: beam.Pipeline, label: str, file_pattern: str):
    # Listed here, sorted, so that a rerun reads the files (and so batches the rows) in the same order.
    files = sorted(tf.io.gfile.glob(file_pattern))
    if not files:
        raise FileNotFoundError(f"no window CSV file matches {file_pattern}")
    raw = pipeline | f"List{label}" >> beam.Create(files) | f"Read{label}" >> beam.FlatMap(_raw_record_batches)
    adapter_config = tensor_adapter.TensorAdapterConfig(
        features.raw_arrow_schema(),
        tensor_representation_util.InferTensorRepresentationsFromMixedSchema(features.raw_schema()),
    )
    return raw, adapter_config


# zlib's fastest level: at 1M trips it compresses the transformed splits in 3.5 s instead of the
# default level's 8.4 s (15% of the transform), for files 22% larger. Any level reads back alike.
GZIP_LEVEL = 1


class _Framed(list):
    """Collects what a TFRecord writer writes, to frame a whole batch before one compressed write."""

    write = list.append


class _GzipWriter:
    """A gzip stream at GZIP_LEVEL over a Beam file (Beam's own compressor has a fixed level)."""

    def __init__(self, file_handle):
        self._file = file_handle
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip header

    def write(self, data: bytes) -> None:
        self._file.write(self._compressor.compress(data))

    def close(self) -> None:
        self._file.write(self._compressor.flush())
        self._file.close()


class _TFRecordBatchSink(filebasedsink.FileBasedSink):
    """Beam's TFRecord sink, one element per record batch: the same framing, file names and
    two-phase commit, but one Beam element per BATCH_SIZE examples instead of one per example (that
    per-element overhead was a fifth of the transform at 1M trips), gzipped at GZIP_LEVEL."""

    def __init__(self, file_path_prefix: str, file_name_suffix: str):
        super().__init__(
            file_path_prefix,
            coder=None,
            file_name_suffix=file_name_suffix,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,  # _GzipWriter compresses
        )

    def open(self, temp_path: str) -> _GzipWriter:
        return _GzipWriter(super().open(temp_path))

    def write_record(self, file_handle: _GzipWriter, records: Sequence[bytes]) -> None:
        framed = _Framed()
        for record in records:
            _TFRecordUtil.write_record(framed, record)
        file_handle.write(b"".join(framed))


def _write_examples(transformed_dataset, split: str, output_dir: str):
    record_batches, _ = transformed_dataset
    label = split.capitalize()
    sink = _TFRecordBatchSink(layout.transformed_prefix(output_dir, split), layout.TRANSFORMED_SUFFIX)
    return (
        record_batches
        | f"Encode{label}" >> beam.MapTuple(lambda batch, _: example_coder.RecordBatchToExamples(batch))
        | f"Write{label}" >> beam.io.Write(sink)
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
