"""A client of the model server (and of TF-Serving): raw window-CSV rows in, big-tip chances out.

    python -m taxi_model.serving.client --csv '<raw window CSV or glob>' [--rows 5] [--model taxi]
        [--label stable | --version N] [--protocol rest|grpc] [--host 127.0.0.1 --port 8501|8500]
        [--wait SECONDS]

Prints one line per row: unique_key, fare, tips, whether it was a big tip, the predicted chance.
`--wait` first waits (up to SECONDS) until the model has an AVAILABLE version.

From Python: `predict_rows(rows, ...)` and `wait_until_available(model, timeout, ...)`. The REST
client and `wait_until_available(protocol="rest")` use the standard library only (no TensorFlow),
so the Airflow environment can import them; building tf.Examples and gRPC need the ML runtime.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.client
import json
import math
import time
from collections.abc import Mapping, Sequence

from taxi_model.columns import read_rows

DEFAULT_MODEL = "taxi"
DEFAULT_PORTS = {"rest": 8501, "grpc": 8500}
INPUT_KEY = "examples"  # the serving signature's input: serialized raw tf.Examples
OUTPUT_KEY = "probabilities"


class ServingRequestError(RuntimeError):
    """The server answered an error: HTTP status or gRPC code, and its message."""

    def __init__(self, status: int | str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclasses.dataclass(frozen=True)
class Prediction:
    probabilities: list[float]  # one per example
    version: int | None  # the version that answered (gRPC says; TF-Serving's REST does not)


def _model_path(model: str, version: int | None, label: str | None) -> str:
    path = f"/v1/models/{model}"
    if version is not None:
        path += f"/versions/{version}"
    elif label:
        path += f"/labels/{label}"
    return path


class RestClient:
    """One keep-alive HTTP connection (a client per thread)."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORTS["rest"], timeout: float = 30.0):
        self._connection = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        try:
            return self._send(method, path, body)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self._connection.close()  # a kept-alive connection the server has closed: reopen it once
            return self._send(method, path, body)

    def _send(self, method: str, path: str, body: bytes | None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self._connection.request(method, path, body=body, headers=headers)
        response = self._connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def _json(self, method: str, path: str, body: bytes | None = None) -> dict:
        status, answer = self.request(method, path, body)
        if status != 200:
            raise ServingRequestError(status, answer.get("error", str(answer)))
        return answer

    def status(self, model: str, version: int | None = None, label: str | None = None) -> list[tuple[int, str]]:
        answer = self._json("GET", _model_path(model, version, label))
        return [(int(s["version"]), s["state"]) for s in answer["model_version_status"]]

    @staticmethod
    def predict_body(serialized_examples: Sequence[bytes], signature_name: str = "") -> bytes:
        instances = [{INPUT_KEY: {"b64": base64.b64encode(e).decode()}} for e in serialized_examples]
        document = {"instances": instances, **({"signature_name": signature_name} if signature_name else {})}
        return json.dumps(document).encode()

    def predict(
        self,
        serialized_examples: Sequence[bytes],
        model: str = DEFAULT_MODEL,
        version: int | None = None,
        label: str | None = None,
        body: bytes | None = None,
    ) -> Prediction:
        """`body` (from `predict_body`) saves encoding the same examples again."""
        answer = self._json(
            "POST", _model_path(model, version, label) + ":predict", body or self.predict_body(serialized_examples)
        )
        return Prediction([row[0] for row in answer["predictions"]], None)

    def close(self) -> None:
        self._connection.close()


class GrpcClient:
    """PredictionService and ModelService stubs on one channel, used the Kubeflow example's way."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORTS["grpc"], timeout: float = 30.0):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self._channel = grpc.insecure_channel(f"{host}:{port}")
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._timeout = timeout

    @staticmethod
    def _spec(spec, model: str, version: int | None, label: str | None) -> None:
        spec.name = model
        if version is not None:
            spec.version.value = version
        elif label:
            spec.version_label = label

    def _call(self, stub_method, request):
        import grpc

        try:
            return stub_method(request, timeout=self._timeout)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionError(f"{e.code().name}: {e.details()}") from None
            raise ServingRequestError(e.code().name, e.details()) from None

    def status(self, model: str, version: int | None = None, label: str | None = None) -> list[tuple[int, str]]:
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, label)
        response = self._call(self._models.GetModelStatus, request)
        return [
            (s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state))
            for s in response.model_version_status
        ]

    def predict_request(
        self,
        serialized_examples: Sequence[bytes],
        model: str = DEFAULT_MODEL,
        version: int | None = None,
        label: str | None = None,
    ):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, label)
        request.model_spec.signature_name = "serving_default"
        request.inputs[INPUT_KEY].CopyFrom(
            tf.make_tensor_proto(list(serialized_examples), shape=[len(serialized_examples)])
        )
        return request

    def predict(
        self,
        serialized_examples: Sequence[bytes],
        model: str = DEFAULT_MODEL,
        version: int | None = None,
        label: str | None = None,
        request=None,
    ) -> Prediction:
        """`request` (from `predict_request`) saves building the same request again."""
        import tensorflow as tf

        response = self._call(
            self._prediction.Predict, request or self.predict_request(serialized_examples, model, version, label)
        )
        probabilities = tf.make_ndarray(response.outputs[OUTPUT_KEY]).reshape(-1).tolist()
        return Prediction(probabilities, response.model_spec.version.value)

    def close(self) -> None:
        self._channel.close()


def connect(
    protocol: str = "rest", host: str = "127.0.0.1", port: int | None = None, timeout: float = 30.0
) -> RestClient | GrpcClient:
    client_class = {"rest": RestClient, "grpc": GrpcClient}[protocol]
    return client_class(host, port or DEFAULT_PORTS[protocol], timeout)


def wait_until_available(
    model: str = DEFAULT_MODEL,
    timeout: float = 60.0,
    *,
    protocol: str = "rest",
    host: str = "127.0.0.1",
    port: int | None = None,
    version: int | None = None,
    label: str | None = None,
) -> int:
    """Waits until `model` (its `version`, or `label`'s) is AVAILABLE; returns that version.

    Raises TimeoutError with the last answer (or connection error) when it is not within `timeout`.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        client = connect(protocol, host, port, timeout=5.0)
        try:
            available = [v for v, state in client.status(model, version, label) if state == "AVAILABLE"]
            if available:
                return max(available)
            last = "no version AVAILABLE yet"
        except (OSError, ServingRequestError) as e:
            last = str(e)
        finally:
            client.close()
        if time.monotonic() >= deadline:
            address = f"{host}:{port or DEFAULT_PORTS[protocol]} ({protocol})"
            raise TimeoutError(
                f"model {model!r} is not AVAILABLE at {address} after {timeout:g} s; last answer: {last}"
            )
        time.sleep(0.25)


def serialized_examples(rows: Sequence[Mapping[str, str]]) -> list[bytes]:
    from taxi_model import features

    return [features.raw_example(row).SerializeToString() for row in rows]


def predict_rows(
    rows: Sequence[Mapping[str, str]],
    model: str = DEFAULT_MODEL,
    *,
    version: int | None = None,
    label: str | None = None,
    protocol: str = "rest",
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 30.0,
) -> Prediction:
    """The chance of a big tip of each raw window-CSV row, from the server."""
    client = connect(protocol, host, port, timeout)
    try:
        return client.predict(serialized_examples(rows), model, version, label)
    finally:
        client.close()


def big_tippers(rows: Sequence[Mapping[str, str]]) -> list[int]:
    """The label of each row, by the feature contract (a missing fare is not a big tip)."""
    import tensorflow as tf

    from taxi_model import features

    fares = [float(row["fare"]) if row["fare"] else math.nan for row in rows]
    tips = [float(row["tips"]) if row["tips"] else 0.0 for row in rows]
    return features.big_tipper(tf.constant(fares, tf.float32), tf.constant(tips, tf.float32)).numpy().tolist()


def format_lines(rows: Sequence[Mapping[str, str]], prediction: Prediction) -> list[str]:
    lines = [f"{'unique_key':<40} {'fare':>8} {'tips':>7} {'big_tipper':>10} {'p(big tip)':>10}"]
    for row, actual, probability in zip(rows, big_tippers(rows), prediction.probabilities, strict=True):
        lines.append(
            f"{row['unique_key']:<40} {row['fare'] or '-':>8} {row['tips'] or '-':>7} {actual:>10} {probability:>10.3f}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", required=True, help="raw window CSV file (or glob), e.g. .../data/eval/part-*.csv")
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--label", help="a version label of models.config, e.g. stable")
    which.add_argument("--version", type=int)
    parser.add_argument("--protocol", choices=sorted(DEFAULT_PORTS), default="rest")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: 8501 for rest, 8500 for grpc")
    parser.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the model to be AVAILABLE",
    )
    args = parser.parse_args(argv)

    import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)

    target = {"protocol": args.protocol, "host": args.host, "port": args.port}
    if args.wait:
        wait_until_available(args.model, args.wait, version=args.version, label=args.label, **target)
    rows = read_rows(args.csv, args.rows)
    if not rows:
        raise SystemExit(f"no rows in CSV files matching {args.csv}")
    prediction = predict_rows(rows, args.model, version=args.version, label=args.label, **target)
    answered_by = f" version {prediction.version}" if prediction.version is not None else ""
    print(f"# {args.model}{answered_by} over {args.protocol}, {len(rows)} rows of {args.csv}")
    print("\n".join(format_lines(rows, prediction)))


if __name__ == "__main__":
    main()
