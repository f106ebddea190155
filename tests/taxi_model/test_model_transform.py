"""The transform pipeline and its atomic output."""

import pickle
import shutil

import pyarrow as pa
import pytest
import tensorflow as tf  # noqa: E402  (after taxi_model: Keras 2 must be selected first)
import tensorflow_transform as tft  # noqa: E402
from model_test_data import COLUMNS, EVAL_ROWS, TRAIN_ROWS, synthetic_trips, write_csv

from taxi_model import features, fileio, transform
from taxi_model import transform_layout as layout
from taxi_model.beam_options import BATCH_SIZE


def _records(pattern: str) -> list[bytes]:
    files = sorted(tf.io.gfile.glob(pattern))
    assert files, pattern
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _examples_by_key(pattern: str) -> dict[bytes, tf.train.Example]:
    # Compared as protos: the order of features in a serialized example may differ between runs.
    examples = [tf.train.Example.FromString(record) for record in _records(pattern)]
    return {e.features.feature[features.EXAMPLE_KEY].bytes_list.value[0]: e for e in examples}


def _leftovers(output_dir) -> list[str]:
    return sorted(p.name for p in output_dir.parent.iterdir() if p.name.startswith(output_dir.name + "."))


def test_transform_writes_graph_with_raw_schema_and_both_splits(transform_dir):
    tf_transform_output = tft.TFTransformOutput(layout.transform_graph_dir(str(transform_dir)))
    assert tf_transform_output.raw_feature_spec() == features.RAW_FEATURE_SPEC
    assert set(tf_transform_output.transformed_feature_spec()) == {
        features.EXAMPLE_KEY,
        features.LABEL_KEY,
        *features.MODEL_INPUT_KEYS,
    }
    assert len(_records(layout.transformed_glob(str(transform_dir), "train"))) == TRAIN_ROWS
    assert len(_records(layout.transformed_glob(str(transform_dir), "eval"))) == EVAL_ROWS
    assert sorted(p.name for p in transform_dir.iterdir()) == [layout.TRANSFORM_GRAPH_DIR, layout.TRANSFORMED_DIR]
    assert _leftovers(transform_dir) == []


def test_a_csv_file_is_read_as_fixed_size_batches_that_own_their_rows(tmp_path):
    path = tmp_path / "part-00000.csv"
    write_csv(path, synthetic_trips(2 * BATCH_SIZE + 500, seed=5))

    batches = list(transform._raw_record_batches(str(path)))

    assert [b.num_rows for b in batches] == [BATCH_SIZE, BATCH_SIZE, 500]
    assert all(b.schema == features.raw_arrow_schema() for b in batches)
    whole = features.raw_record_batch(features.read_raw_file(str(path)))
    assert pa.Table.from_batches(batches).equals(pa.Table.from_batches([whole]))
    # A Beam element is pickled between stages: a batch must not carry the whole file's buffers.
    assert len(pickle.dumps(batches[0])) < len(pickle.dumps(whole)) / 2


def test_transformed_files_are_gzipped_tfrecords_at_the_fast_level(transform_dir):
    import gzip
    import zlib

    (path,) = tf.io.gfile.glob(layout.transformed_glob(str(transform_dir), "eval"))
    compressed = open(path, "rb").read()
    framed = gzip.decompress(compressed)
    compressor = zlib.compressobj(transform.GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    assert compressor.compress(framed) + compressor.flush() == compressed
    assert len(_records(path)) == EVAL_ROWS  # and TensorFlow reads them back, CRCs checked


def test_rerun_replaces_the_output_with_the_same_result(window_dir, transform_dir, tmp_path, monkeypatch):
    from tfx_bsl.coders import batch_util

    output = tmp_path / "transform"
    shutil.copytree(transform_dir, output)
    (output / "stale-file").write_text("from an older run")
    # Beam tunes batch sizes to timings when none is fixed, so a busy machine batches differently;
    # the rerun must not depend on it (the pipelines pin taxi_model.beam_options.BATCH_SIZE).
    monkeypatch.setattr(batch_util, "_BATCH_SIZE_CAP", 7)

    transform.run(
        str(window_dir / "train" / "part-*.csv"),
        str(window_dir / "eval" / "part-*.csv"),
        "standard",
        str(output),
        ["--runner=FnApiRunner"],
    )

    assert not (output / "stale-file").exists()
    for split in ("train", "eval"):
        rerun, first = (_examples_by_key(layout.transformed_glob(str(d), split)) for d in (output, transform_dir))
        assert list(rerun) == list(first) and rerun == first  # the same examples, in the same order
    assert _leftovers(output) == []


def test_failed_pipeline_leaves_no_output(window_dir, tmp_path):
    bad_eval = tmp_path / "bad" / "part-00000.csv"
    bad_eval.parent.mkdir()
    bad_eval.write_text(",".join(COLUMNS) + "\n" + "a row,with too few,columns\n")
    output = tmp_path / "transform"

    with pytest.raises(Exception, match="columns"):
        transform.run(
            str(window_dir / "train" / "part-*.csv"), str(bad_eval), "standard", str(output), ["--runner=FnApiRunner"]
        )

    assert not output.exists()
    assert _leftovers(output) == []


def test_atomic_output_dir_publishes_whole_or_keeps_the_previous_output(tmp_path):
    output = tmp_path / "out"
    with fileio.atomic_output_dir(str(output)) as staging:
        assert not output.exists()
        (tmp_path / staging / "result").write_text("first")
    assert (output / "result").read_text() == "first"

    with pytest.raises(RuntimeError):
        with fileio.atomic_output_dir(str(output)) as staging:
            (tmp_path / staging / "result").write_text("half-written")
            raise RuntimeError("crash mid-way")
    assert (output / "result").read_text() == "first"

    with fileio.atomic_output_dir(str(output)) as staging:
        (tmp_path / staging / "other").write_text("second")
    assert sorted(p.name for p in output.iterdir()) == ["other"]
    assert _leftovers(output) == []


def test_a_retry_sweeps_what_a_killed_try_left_behind(tmp_path):
    output = tmp_path / "out"
    killed = tmp_path / "out.tmp-0123456789abcdef"  # a SIGKILLed try never reached its cleanup
    killed.mkdir()
    (killed / "part").write_text("half-written")
    with fileio.atomic_output_dir(str(output)) as staging:
        (tmp_path / staging / "result").write_text("retry")
    assert (output / "result").read_text() == "retry"
    assert _leftovers(output) == []
