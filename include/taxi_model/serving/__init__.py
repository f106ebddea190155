"""A model server for the local platform that honours TF-Serving's contract (REST and gRPC).

There is no `tensorflow_model_server` binary for every machine, so the local platform serves the
SavedModels under the serving root (`<root>/<model>/<version>/`) with this server, in the ML
runtime; the same clients work against it and against TF-Serving.

    server      the process: `python -m taxi_model.serving.server --serving_root DIR`
    repository  which versions are loaded: polls the serving root and `models.config`
    inference   runs a signature on validated inputs (tf1_session: TF1 SavedModels in a Session)
    classify_regress   Classify, Regress and MultiInference on serialized tf.Examples
    rest_json   TF-Serving's REST JSON <-> tensors (row and columnar formats, b64)
    rest_examples   TF-Serving's REST JSON <-> tf.Examples and results (:classify, :regress)
    rest, grpc_services   the two front ends
    client      `predict_rows`, `wait_until_available` and a CLI

Importing this package (and `client`, for the REST status calls) does not import TensorFlow.
"""
