"""The feature contract: raw columns, label, transformed features and `preprocessing_fn`.

The one place that names features. Transform, training, evaluation and serving all import it.
Follows TFX's Chicago-taxi module (taxi_utils_native_keras.py): same features, same label,
same `_xf` suffix for transformed features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
from tensorflow_metadata.proto.v0 import schema_pb2

from taxi_model import columns, variants

# The window CSV's columns (taxi_model.columns) with their raw tf.Example types. Every column may be
# empty, so all are VarLen (a missing value is an empty list) and `_fill_in_missing` makes them dense.
_TF_TYPES = {"string": tf.string, "int": tf.int64, "float": tf.float32}
RAW_COLUMNS: tuple[tuple[str, tf.dtypes.DType], ...] = tuple(
    (name, _TF_TYPES[kind]) for name, kind in columns.RAW_COLUMN_TYPES
)
RAW_COLUMN_NAMES = columns.RAW_COLUMN_NAMES
RAW_FEATURE_SPEC = {name: tf.io.VarLenFeature(dtype) for name, dtype in RAW_COLUMNS}

FARE_KEY = "fare"
TIPS_KEY = "tips"
# Carried through the transform unchanged so transformed rows can be joined back to raw rows.
EXAMPLE_KEY = "unique_key"
LABEL_KEY = "big_tipper"

DENSE_FLOAT_FEATURE_KEYS = ("fare", "trip_miles", "trip_seconds")  # z-scored
VOCAB_FEATURE_KEYS = ("payment_type", "company")
BUCKET_FEATURE_KEYS = ("pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude")
# Integer categories used as they are, with the number of distinct values (values are indices).
CATEGORICAL_FEATURE_SIZES = {"trip_start_hour": 24, "trip_start_day": 8, "trip_start_month": 13}


def transformed_name(key: str) -> str:
    return key + "_xf"


DENSE_INPUT_KEYS = tuple(transformed_name(k) for k in DENSE_FLOAT_FEATURE_KEYS)
CATEGORICAL_INPUT_KEYS = tuple(
    transformed_name(k) for k in VOCAB_FEATURE_KEYS + BUCKET_FEATURE_KEYS + tuple(CATEGORICAL_FEATURE_SIZES)
)
MODEL_INPUT_KEYS = DENSE_INPUT_KEYS + CATEGORICAL_INPUT_KEYS


def raw_schema() -> schema_pb2.Schema:
    return tft.DatasetMetadata.from_feature_spec(RAW_FEATURE_SPEC).schema


def _fill_in_missing(x, default_value=None):
    """Densifies a VarLen feature of at most one value per row, filling empty rows.

    The default is '' for strings and 0 for numbers, as in TFX's taxi module.
    """
    if not isinstance(x, tf.sparse.SparseTensor):
        return x
    if default_value is None:
        default_value = "" if x.dtype == tf.string else 0
    return tf.squeeze(
        tf.sparse.to_dense(tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default_value),
        axis=1,
    )


def big_tipper(fare: tf.Tensor, tips: tf.Tensor) -> tf.Tensor:
    """The label: 1 if the tip was more than 20% (BIG_TIPPER_TIP_SHARE) of the fare, 0 where the fare
    is missing (NaN)."""
    return tf.where(
        tf.math.is_nan(fare), tf.constant(0, tf.int64), tf.cast(tips > columns.BIG_TIPPER_TIP_SHARE * fare, tf.int64)
    )


def make_preprocessing_fn(variant_name: str) -> Callable[[Mapping[str, tf.Tensor]], dict[str, tf.Tensor]]:
    """tf.Transform's `preprocessing_fn` for the named variant (raw features -> transformed)."""
    knobs = variants.variant(variant_name)

    def preprocessing_fn(inputs):
        outputs = {EXAMPLE_KEY: _fill_in_missing(inputs[EXAMPLE_KEY])}
        for key in DENSE_FLOAT_FEATURE_KEYS:
            outputs[transformed_name(key)] = tft.scale_to_z_score(_fill_in_missing(inputs[key]))
        for key in VOCAB_FEATURE_KEYS:
            outputs[transformed_name(key)] = tft.compute_and_apply_vocabulary(
                _fill_in_missing(inputs[key]),
                top_k=knobs.vocab_size,
                num_oov_buckets=knobs.oov_buckets,
                vocab_filename=key,
            )
        for key in BUCKET_FEATURE_KEYS:
            outputs[transformed_name(key)] = tft.bucketize(_fill_in_missing(inputs[key]), knobs.bucket_count)
        for key, size in CATEGORICAL_FEATURE_SIZES.items():
            # Clipped so that a bad value cannot crash the one-hot encoding at serving time.
            outputs[transformed_name(key)] = tf.clip_by_value(_fill_in_missing(inputs[key]), 0, size - 1)
        # The fare is filled with NaN, not 0, so that a missing fare gives label 0.
        outputs[LABEL_KEY] = big_tipper(
            _fill_in_missing(inputs[FARE_KEY], math.nan), _fill_in_missing(inputs[TIPS_KEY])
        )
        return outputs

    return preprocessing_fn


# TFX's module-file convention: a module-level `preprocessing_fn` (the default variant).
preprocessing_fn = make_preprocessing_fn(variants.DEFAULT_VARIANT)


def categorical_sizes(transformed_schema: schema_pb2.Schema) -> dict[str, int]:
    """Number of distinct values of each categorical model input.

    Vocabulary and bucket sizes are read from the domains TFT records in the transformed schema,
    so the trainer needs no variant argument and cannot disagree with the transform graph.
    """
    domains = {f.name: f.int_domain.max + 1 for f in transformed_schema.feature if f.HasField("int_domain")}
    sizes = {transformed_name(k): n for k, n in CATEGORICAL_FEATURE_SIZES.items()}
    return {key: sizes[key] if key in sizes else domains[key] for key in CATEGORICAL_INPUT_KEYS}


# Per raw type: how to parse it from CSV text, and which tf.Example list holds it.
_RAW_TYPES = {
    tf.string: (str.encode, "bytes_list", tf.train.BytesList),
    tf.int64: (int, "int64_list", tf.train.Int64List),
    tf.float32: (float, "float_list", tf.train.FloatList),
}


def raw_instance(row: Mapping[str, str]) -> dict[str, list]:
    """A window-CSV row (column -> text, '' = NULL) as typed raw values: one value, or none if NULL."""
    return {name: [_RAW_TYPES[dtype][0](row[name])] if row.get(name) else [] for name, dtype in RAW_COLUMNS}


# Per raw type: the Arrow type a window CSV's text is read as, and the one its tf.Example list holds.
# Floats are read as float64 and rounded to float32 once, as float(text) into a FloatList rounds them.
_ARROW_TYPES = {
    tf.string: (pa.string(), pa.large_binary()),
    tf.int64: (pa.int64(), pa.int64()),
    tf.float32: (pa.float64(), pa.float32()),
}


def read_raw_file(path: str) -> pa.Table:
    """One window-CSV file (local or gs://, with its header) as typed Arrow columns, null where the
    text is empty (raw_instance's rule), in RAW_COLUMNS' order."""
    import pyarrow.csv as pa_csv

    convert = pa_csv.ConvertOptions(
        column_types={name: _ARROW_TYPES[dtype][0] for name, dtype in RAW_COLUMNS},
        include_columns=list(RAW_COLUMN_NAMES),
        null_values=[""],
        strings_can_be_null=True,
    )
    source = path
    if "://" in path:  # gs://: read through TensorFlow's file system
        with tf.io.gfile.GFile(path, "rb") as f:
            source = pa.BufferReader(f.read())
    try:
        return pa_csv.read_csv(source, convert_options=convert)
    except pa.ArrowInvalid as error:
        raise ValueError(f"{path}: {error}") from error


def read_raw_columns(csv_pattern: str) -> pa.Table:
    """The window-CSV files a glob names, each read by read_raw_file, in file order, as one table."""
    tables = [read_raw_file(path) for path in sorted(tf.io.gfile.glob(csv_pattern))]
    if not tables:
        return pa.table({name: pa.array([], _ARROW_TYPES[dtype][0]) for name, dtype in RAW_COLUMNS})
    return pa.concat_tables(tables)


def raw_arrow_schema() -> pa.Schema:
    """The schema of raw_record_batch's batches: one list column per raw feature, typed as tfx_bsl's
    CSV decoder and example coder type them."""
    return pa.schema([(name, pa.large_list(_ARROW_TYPES[dtype][1])) for name, dtype in RAW_COLUMNS])


def raw_record_batch(table: pa.Table) -> pa.RecordBatch:
    """A read_raw_columns table as the record batch of raw features that TFT and tfx_bsl's encoder
    take: each value a one-element list, a NULL an empty list (as raw_example leaves it)."""
    lists = []
    for name, dtype in RAW_COLUMNS:
        column = table.column(name).combine_chunks().cast(_ARROW_TYPES[dtype][1])
        present = column.is_valid().to_numpy(zero_copy_only=False)
        offsets = pa.array(np.concatenate([[0], np.cumsum(present)]), pa.int64())
        lists.append(pa.LargeListArray.from_arrays(offsets, column.drop_null()))
    return pa.RecordBatch.from_arrays(lists, schema=raw_arrow_schema())


def serialized_examples(table: pa.Table) -> list[bytes]:
    """Each row of a read_raw_columns table as a serialized raw tf.Example: the features and values
    raw_example gives the row (a NULL is an empty list), encoded by tfx_bsl in C++ (raw_example
    costs ~170 us a row in Python, a minute for a year's eval split)."""
    from tfx_bsl.coders import example_coder

    return example_coder.RecordBatchToExamplesEncoder().encode(raw_record_batch(table))


def raw_example(row: Mapping[str, str]) -> tf.train.Example:
    """A window-CSV row as the raw tf.Example that the serving signatures take (serialized)."""
    feature = {}
    for (name, dtype), values in zip(RAW_COLUMNS, raw_instance(row).values(), strict=True):
        _, kind, value_list = _RAW_TYPES[dtype]
        feature[name] = tf.train.Feature(**{kind: value_list(value=values)})
    return tf.train.Example(features=tf.train.Features(feature=feature))
