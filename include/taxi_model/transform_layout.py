"""Where the transform writes inside its output dir; pure Python, shared by its writer and readers.

<output>/transform_graph/                       TFT transform graph + raw and transformed schemas
<output>/transformed/{train,eval}-*.tfrecord.gz  transformed tf.Examples (gzipped)
"""

TRANSFORM_GRAPH_DIR = "transform_graph"
TRANSFORMED_DIR = "transformed"
TRANSFORMED_SUFFIX = ".tfrecord.gz"  # gzipped TFRecords (transform._TFRecordBatchSink)
SPLITS = ("train", "eval")


def transform_graph_dir(output_dir: str) -> str:
    return f"{output_dir.rstrip('/')}/{TRANSFORM_GRAPH_DIR}"


def transformed_prefix(output_dir: str, split: str) -> str:
    """The path prefix of a split's transformed TFRecord shards."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    return f"{output_dir.rstrip('/')}/{TRANSFORMED_DIR}/{split}"


def transformed_glob(output_dir: str, split: str) -> str:
    return f"{transformed_prefix(output_dir, split)}-*{TRANSFORMED_SUFFIX}"
