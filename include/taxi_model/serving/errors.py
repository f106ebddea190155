"""The one error type of the server: a gRPC status code and a message, as TF-Serving reports them."""

from __future__ import annotations

import grpc

# TF-Serving's mapping of status codes to HTTP statuses (model_servers/http_server.cc).
_HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# TensorFlow's error codes are gRPC's status code numbers.
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or _HTTP_STATUS.get(code, 500)


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def from_tf_error_code(error_code: int, message: str) -> ServingError:
    return ServingError(_BY_NUMBER.get(error_code, grpc.StatusCode.UNKNOWN), message)


def from_model_error(error_code: int, message: str) -> ServingError:
    """A model's op error on a request's inputs: its own code, unless that code answers 5xx (a kernel's
    INTERNAL, UNKNOWN, UNIMPLEMENTED or DATA_LOSS on inputs it cannot take): then INVALID_ARGUMENT,
    with TF's message, as the request caused it. UNAVAILABLE and DEADLINE_EXCEEDED stay what they are."""
    error = from_tf_error_code(error_code, message)
    if error.http_status >= 500 and error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return invalid_argument(message)
    return error


def status_code_of(error: BaseException) -> grpc.StatusCode:
    """The status code of any error: ours, TensorFlow's (`error_code`), a missing file, or UNKNOWN."""
    if isinstance(error, ServingError):
        return error.code
    if isinstance(error, FileNotFoundError):
        return grpc.StatusCode.NOT_FOUND
    return _BY_NUMBER.get(getattr(error, "error_code", None), grpc.StatusCode.UNKNOWN)


class ConfigError(ValueError):
    """A configuration file (models.config, batching or monitoring parameters) that does not parse,
    or asks for what this server does not do: the server refuses to start, as TF-Serving does."""
