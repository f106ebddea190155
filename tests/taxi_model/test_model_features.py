"""The feature contract and the variants."""

import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402  (after taxi_model: Keras 2 must be selected first)
import tensorflow_transform as tft  # noqa: E402
import tensorflow_transform.beam as tft_beam  # noqa: E402
from model_test_data import COLUMNS, runtime_env, synthetic_trips

from taxi_model import features, variants


def test_raw_columns_are_the_window_csv_columns_in_order():
    assert features.RAW_COLUMN_NAMES == COLUMNS
    assert list(features.RAW_FEATURE_SPEC) == list(COLUMNS)


def test_label_is_a_tip_above_a_fifth_of_the_fare_and_zero_without_fare():
    fare = tf.constant([10.0, 10.0, 10.0, math.nan, 0.0])
    tips = tf.constant([3.0, 2.0, 0.0, 5.0, 0.0])
    assert features.big_tipper(fare, tips).numpy().tolist() == [1, 0, 0, 0, 0]


def test_variants_are_declared_once_by_name():
    assert {name: v.name for name, v in variants.VARIANTS.items()} == {"standard": "standard", "coarse": "coarse"}
    assert variants.variant("standard") == variants.Variant(
        "standard", bucket_count=10, vocab_size=1000, oov_buckets=10
    )
    assert variants.variant("coarse") == variants.Variant("coarse", bucket_count=2, vocab_size=10, oov_buckets=1)
    assert variants.DEFAULT_VARIANT in variants.VARIANTS


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown model variant 'fine'.*standard, coarse"):
        variants.variant("fine")
    with pytest.raises(ValueError, match="unknown model variant"):
        features.make_preprocessing_fn("fine")


def test_variants_and_layout_import_without_tensorflow():
    """The Airflow DAG imports these at parse time, where TensorFlow is not installed."""
    code = (
        "import sys, taxi_model.variants, taxi_model.transform_layout\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'apache_beam'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=runtime_env())


def _analyze_and_transform(rows, variant_name, temp_dir):
    """Runs the variant's preprocessing_fn on `rows` in memory; returns the transformed rows and schema."""
    raw = ([features.raw_instance(row) for row in rows], tft.DatasetMetadata(features.raw_schema()))
    with tft_beam.Context(temp_dir=str(temp_dir)):
        (transformed, metadata), _ = raw | tft_beam.AnalyzeAndTransformDataset(
            features.make_preprocessing_fn(variant_name)
        )
    return transformed, metadata.deferred_metadata[0].schema


@pytest.mark.parametrize("variant_name", sorted(variants.VARIANTS))
def test_preprocessing_fn_outputs_per_variant(variant_name, tmp_path):
    knobs = variants.variant(variant_name)
    rows = synthetic_trips(200, seed=3)
    rows[0]["fare"], rows[0]["tips"] = "", "5.0"  # a tip without a fare is not a big tip
    rows[1]["company"] = "A company seen once"  # a rare value the coarse vocabulary drops
    transformed, schema = _analyze_and_transform(rows, variant_name, tmp_path)

    assert set(transformed[0]) == {features.EXAMPLE_KEY, features.LABEL_KEY, *features.MODEL_INPUT_KEYS}
    assert [t[features.EXAMPLE_KEY] for t in transformed] == [r["unique_key"].encode() for r in rows]

    # Vocabulary sizes: the kept values plus the OOV buckets; bucket counts as configured.
    def vocab_size(key):
        distinct = {r[key] for r in rows} - {""}  # a missing value is not a vocabulary entry
        return min(len(distinct), knobs.vocab_size) + knobs.oov_buckets

    expected_sizes = {
        **{features.transformed_name(k): vocab_size(k) for k in features.VOCAB_FEATURE_KEYS},
        **{features.transformed_name(k): knobs.bucket_count for k in features.BUCKET_FEATURE_KEYS},
        **{features.transformed_name(k): n for k, n in features.CATEGORICAL_FEATURE_SIZES.items()},
    }
    sizes = features.categorical_sizes(schema)
    assert sizes == expected_sizes
    for key, size in sizes.items():
        values = np.array([t[key] for t in transformed])
        assert values.min() >= 0 and values.max() < size, key

    for key in features.DENSE_INPUT_KEYS:
        values = np.array([t[key] for t in transformed])
        assert abs(values.mean()) < 1e-4 and abs(values.std() - 1) < 1e-2, key

    fare = np.array([float(r["fare"]) if r["fare"] else np.nan for r in rows])
    tips = np.array([float(r["tips"]) for r in rows])
    expected_labels = np.where(np.isnan(fare), 0, tips > 0.2 * fare)
    assert [t[features.LABEL_KEY] for t in transformed] == expected_labels.astype(int).tolist()
    assert transformed[0][features.LABEL_KEY] == 0
    assert 0.15 < expected_labels.mean() < 0.35


def test_raw_example_round_trips_through_the_raw_spec():
    row = synthetic_trips(1, seed=1)[0]
    row["company"] = ""
    parsed = tf.io.parse_example([features.raw_example(row).SerializeToString()], features.RAW_FEATURE_SPEC)
    assert parsed["company"].values.numpy().tolist() == []
    assert parsed["payment_type"].values.numpy().tolist() == [row["payment_type"].encode()]
    assert parsed["trip_start_hour"].values.numpy().tolist() == [int(row["trip_start_hour"])]
    assert parsed["fare"].values.numpy() == pytest.approx([float(row["fare"])])


def test_csv_files_serialize_to_the_examples_raw_example_makes(tmp_path):
    """The evaluation's fast path (Arrow CSV reader, tfx_bsl's encoder) against raw_example, row by
    row: the same parsed tensors, NULLs (empty lists), texts with commas and spaces and 11-digit
    census tracts included, over two files read in order."""
    from model_test_data import write_csv

    from taxi_model.columns import read_rows

    trips = synthetic_trips(200, seed=3)
    trips[0] = {**trips[0], "company": "", "pickup_latitude": "", "trip_miles": "", "payment_type": "Cash, or not"}
    trips[1] = {**trips[1], "company": " Taxi  Affiliation ", "pickup_census_tract": "17031081403"}
    write_csv(tmp_path / "part-00000.csv", trips[:120])
    write_csv(tmp_path / "part-00001.csv", trips[120:])
    pattern = str(tmp_path / "part-*.csv")
    fast = features.serialized_examples(features.read_raw_columns(pattern))
    slow = [features.raw_example(row).SerializeToString() for row in read_rows(pattern)]
    assert len(fast) == len(slow) == 200
    parsed_fast = tf.io.parse_example(fast, features.RAW_FEATURE_SPEC)
    parsed_slow = tf.io.parse_example(slow, features.RAW_FEATURE_SPEC)
    for name, expected in parsed_slow.items():
        got = parsed_fast[name]
        assert got.values.dtype == expected.values.dtype, name
        assert got.indices.numpy().tolist() == expected.indices.numpy().tolist(), name
        assert got.values.numpy().tolist() == expected.values.numpy().tolist(), name
    assert features.read_raw_columns(str(tmp_path / "none-*.csv")).num_rows == 0
