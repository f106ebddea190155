"""Helpers of the serving tests: publishing versions as the deployment does, and running servers."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from taxi_model.serving.server import ModelServer, ServerOptions

# Small limits, so that the tests can exceed them cheaply.
MAX_BATCH_SIZE = 50
MAX_BODY_BYTES = 1 << 20


def publish_version(model_dir: Path, base_path: Path, version: int) -> Path:
    """Copies a SavedModel in as `version`, atomically: into a dot-name the server ignores, then renamed."""
    base_path.mkdir(parents=True, exist_ok=True)
    staging = base_path / f".{version}.staging"
    shutil.copytree(model_dir, staging)
    return staging.rename(base_path / str(version))


def write_models_config(serving_root: Path, model: str, versions: list[int], labels: dict[str, int]) -> None:
    """models.config as the deployment writes it (atomically, by rename)."""
    entry = [
        f'name: "{model}"',
        f'base_path: "{serving_root / model}"',
        'model_platform: "tensorflow"',
        "model_version_policy { specific { " + " ".join(f"versions: {v}" for v in versions) + " } }",
    ]
    entry += [f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items()]
    staging = serving_root / ".models.config.tmp"
    staging.write_text("model_config_list { config { " + " ".join(entry) + " } }\n")
    staging.rename(serving_root / "models.config")


@contextlib.contextmanager
def running_server(serving_root: Path, poll_seconds: float = 0.2, **options) -> Iterator[ModelServer]:
    """A server on free ports of 127.0.0.1, stopped on exit; `options`: more ServerOptions."""
    server = ModelServer(
        ServerOptions(
            serving_root=str(serving_root),
            rest_port=0,
            grpc_port=0,
            poll_seconds=poll_seconds,
            max_batch_size=MAX_BATCH_SIZE,
            max_body_bytes=MAX_BODY_BYTES,
            **options,
        )
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def serve_from_config(serving_root: Path, base_paths: dict[str, Path]) -> Path:
    """A serving root whose models.config serves each base path (e.g. TF-Serving's test SavedModels) as its name."""
    entries = [
        f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}'
        for name, path in base_paths.items()
    ]
    (serving_root / "models.config").write_text("model_config_list { " + " ".join(entries) + " }\n")
    return serving_root


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Polls `condition` until it holds; fails the test with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


def read_response(reader: BinaryIO) -> tuple[int, bytes] | None:
    """The next HTTP response on a raw connection: (status, body); None when the server closed instead."""
    status_line = reader.readline()
    if not status_line:
        return None
    headers = {}
    while line := reader.readline().strip():
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), reader.read(int(headers.get("content-length", 0)))
