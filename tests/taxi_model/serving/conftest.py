"""Fixtures of the serving tests: the trained model's own answers, and a server serving it."""

from __future__ import annotations

import pytest

import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
from model_test_data import read_csv
from serving_test_support import publish_version, running_server

from taxi_model.serving import client

ROWS = 20


@pytest.fixture(scope="session")
def eval_rows(window_dir) -> list[dict[str, str]]:
    return read_csv(window_dir / "eval")[:ROWS]


@pytest.fixture(scope="session")
def examples(eval_rows) -> list[bytes]:
    return client.serialized_examples(eval_rows)


@pytest.fixture(scope="session")
def saved_model_outputs(trained_model, examples) -> dict[str, dict]:
    """What the SavedModel itself answers for the rows, per signature: {output: numpy array}."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(trained_model["model"]))

    def outputs(function) -> dict:
        (input_name,) = function.structured_input_signature[1]  # each signature takes the serialized examples
        return {key: tensor.numpy() for key, tensor in function(**{input_name: tf.constant(examples)}).items()}

    return {name: outputs(function) for name, function in loaded.signatures.items()}


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    """Serves the trained model as `taxi` version 1 (and nothing else)."""
    root = tmp_path_factory.mktemp("serving")
    publish_version(trained_model["model"], root / "taxi", 1)
    with running_server(root) as running:
        yield running


@pytest.fixture
def rest(server):
    connection = client.RestClient(port=server.rest_port)
    yield connection
    connection.close()


@pytest.fixture
def grpc_client(server):
    connection = client.GrpcClient(port=server.grpc_port)
    yield connection
    connection.close()
