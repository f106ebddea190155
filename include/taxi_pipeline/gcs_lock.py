"""What fsspec lacks on GCS: a lock object, created only if absent (`ifGenerationMatch=0`, which GCS
grants to one writer only). The serving root's writers (pushes, label moves, rollbacks) hold it, as
the local serving root's writers hold an fcntl lock (taxi_pipeline.files.lock picks one by scheme).

The object names its holder and is released by deleting that generation; a lock older than its stale
timeout (a holder that died) is broken. Both kinds are re-entrant in a thread (`held_once_per_thread`:
a push and the label move after it share one hold). Works against a local emulator when
STORAGE_EMULATOR_HOST is set (the tests).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime

log = logging.getLogger(__name__)


def _blob(uri: str):
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    from taxi_pipeline.gcp_settings import conn_id

    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// path: {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    return GCSHook(gcp_conn_id=conn_id()).get_conn().bucket(bucket).blob(name)


LOCK_STALE_AFTER = 15 * 60  # seconds: a lock older than this was left by a holder that died
LOCK_POLL = 1.0


class LockTimeout(TimeoutError):
    pass


def _holder_name() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _describe(blob) -> str:
    try:
        info = json.loads(blob.download_as_text())
    except Exception:  # noqa: BLE001 - gone meanwhile, or not ours: say what is known
        info = {}
    since = blob.time_created.isoformat() if blob.time_created else "?"
    return f"{info.get('holder', 'an unknown holder')} ({info.get('process', '?')}), since {since}"


def lock(
    uri: str,
    holder: str = "",
    stale_after: float = LOCK_STALE_AFTER,
    wait: float | None = None,
    poll: float = LOCK_POLL,
):
    """Hold the lock object `uri` (blocking until it is free). Re-entrant in a thread.

    Taken by creating the object with `if_generation_match=0` (only one creator succeeds; the
    object names the holder), released by deleting that generation. A lock created more than
    `stale_after` seconds ago (by GCS's clock) is broken, by deleting the generation that was seen
    (two waiters cannot both break it, nor break a fresh one). `wait`: give up after that many
    seconds with LockTimeout naming the holder (None: wait until the lock is free or stale)."""
    return held_once_per_thread(uri, lambda: _lock_object(uri, holder, stale_after, wait, poll))


@contextlib.contextmanager
def _lock_object(uri: str, holder: str, stale_after: float, wait: float | None, poll: float) -> Iterator[None]:
    from google.api_core.exceptions import NotFound, PreconditionFailed

    blob = _blob(uri)
    content = json.dumps(
        {"holder": holder or "?", "process": _holder_name(), "acquired": datetime.now(UTC).isoformat()}
    )
    started = time.monotonic()
    waiting_for = None
    while True:
        try:
            blob.upload_from_string(content, if_generation_match=0)
            break
        except PreconditionFailed:
            pass
        current = blob.bucket.get_blob(blob.name)
        if current is None:
            continue  # released meanwhile
        age = (datetime.now(UTC) - current.time_created).total_seconds() if current.time_created else 0
        if age > stale_after:
            log.warning(
                "Breaking the stale lock %s (%.0f s old, older than %.0f s): held by %s",
                uri,
                age,
                stale_after,
                _describe(current),
            )
            with contextlib.suppress(NotFound, PreconditionFailed):
                current.delete(if_generation_match=current.generation)
            continue
        if waiting_for != current.generation:
            waiting_for = current.generation
            log.info("Waiting for the lock %s, held by %s", uri, _describe(current))
        if wait is not None and time.monotonic() - started >= wait:
            raise LockTimeout(
                f"the lock {uri} is held by {_describe(current)}; gave up after {wait:.0f} s "
                f"(it is broken once older than {stale_after:.0f} s)"
            )
        time.sleep(poll)
    generation = blob.generation
    try:
        yield
    finally:
        try:
            blob.delete(if_generation_match=generation)
        except (NotFound, PreconditionFailed):
            log.warning(
                "The lock %s was broken while held (older than %.0f s?): another writer may have interleaved",
                uri,
                stale_after,
            )


_held = threading.local()


@contextlib.contextmanager
def held_once_per_thread(key: str, acquire: Callable[[], AbstractContextManager]) -> Iterator[None]:
    """Hold the lock `acquire()` takes, re-entrantly: a thread that already holds `key` goes on
    without taking it again (a push and the label move that follows it share one hold)."""
    held = getattr(_held, "keys", None)
    if held is None:
        held = _held.keys = Counter()
    if held[key]:
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    with acquire():
        held[key] = 1
        try:
            yield
        finally:
            held[key] = 0
