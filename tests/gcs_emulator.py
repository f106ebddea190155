"""A local GCS for the tests: gcp-storage-emulator in this process on a free loopback port, the
google provider's GCSHook pointed at it (STORAGE_EMULATOR_HOST, a connection with anonymous
credentials).

The emulator ignores GCS's preconditions (`ifGenerationMatch` and friends); `running()` teaches
its object handlers GCS's documented rule: a write or delete whose precondition does not hold
fails with 412 Precondition Failed and changes nothing (`ifGenerationMatch=0`: only if the object
does not exist). Its HTTP server handles one request at a time, so the check and the write are
atomic, as on GCS.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from http import HTTPStatus
from unittest import mock

PROJECT = "taxi-test"
BUCKET = f"{PROJECT}-taxi-mlops"  # the gcp settings' default bucket for the project
ROOT = f"gs://{BUCKET}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _target(request) -> tuple[str, str | None]:
    """The bucket and object a request writes or deletes (the destination of a copy or rewrite)."""
    params = request.params
    if "dest_object_id" in params:
        return params["dest_bucket_name"], params["dest_object_id"]
    if "object_id" in params:
        return params["bucket_name"], params["object_id"]
    name = request.query.get("name", [None])[0]
    if name is None and request.query.get("uploadType", [""])[0] == "multipart":
        name = request.data["meta"].get("name")
    return params["bucket_name"], name


def _with_preconditions(handler):
    from gcp_storage_emulator.exceptions import NotFound

    def checked(request, response, storage, *args, **kwargs):
        bucket, name = _target(request)
        if name is not None:
            try:
                current = storage.get_file_obj(bucket, name)
            except NotFound:
                current = None
            generation = current["generation"] if current else "0"
            metageneration = current["metageneration"] if current else None
            conditions = {
                "ifGenerationMatch": lambda v: v == generation,
                "ifGenerationNotMatch": lambda v: v != generation,
                "ifMetagenerationMatch": lambda v: v == metageneration,
                "ifMetagenerationNotMatch": lambda v: v != metageneration,
            }
            for key, holds in conditions.items():
                wanted = request.query.get(key)
                if wanted and not holds(wanted[0]):
                    response.status = HTTPStatus.PRECONDITION_FAILED
                    response.json(
                        {
                            "error": {
                                "code": 412,
                                "message": f"Precondition {key}={wanted[0]} failed",
                                "errors": [{"reason": "conditionNotMet"}],
                            }
                        }
                    )
                    return
        return handler(request, response, storage, *args, **kwargs)

    checked.wrapped = handler
    return checked


@contextlib.contextmanager
def _preconditions() -> Iterator[None]:
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    names = ("insert", "upload_partial", "delete", "copy", "rewrite", "patch", "compose")
    originals = {name: getattr(objects, name) for name in names}
    wrapped = {fn: _with_preconditions(fn) for fn in originals.values()}
    replaced = []
    for _regex, methods in server.HANDLERS:
        for method, fn in list(methods.items()):
            if fn in wrapped:
                methods[method] = wrapped[fn]
                replaced.append((methods, method, fn))
    objects.insert = wrapped[originals["insert"]]  # the router's fallback for uploads without /upload
    try:
        yield
    finally:
        objects.insert = originals["insert"]
        for methods, method, fn in replaced:
            methods[method] = fn


@contextlib.contextmanager
def running() -> Iterator[object]:
    """The emulator with an empty default bucket, and the environment that points the hooks at it."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    env = {
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
        "TAXI_GCP_PROJECT": PROJECT,
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
            {"conn_type": "google_cloud_platform", "extra": {"is_anonymous": True, "project": PROJECT}}
        ),
    }
    with _preconditions(), mock.patch.dict(os.environ, env):
        server.start()
        try:
            yield server
        finally:
            server.stop()
