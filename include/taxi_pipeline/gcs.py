"""gs:// paths for the gcp platform, through the google provider's GCSHook (its connection's credentials).

GCS has no directory rename, so a "directory" is published object by object in an order that keeps
readers safe: stale objects of an earlier try are deleted, the new objects are written, and the
`last` ones (a SavedModel's saved_model.pb, a marker) are written after all others. A single object
write is atomic. A copy into a place that already holds some of the objects (a retry) rewrites only
the objects whose content differs (same crc32c and size: left alone).

`lock(uri)` is a lock object for writers that must not interleave (the serving root's pushes): it
is created with the precondition `ifGenerationMatch=0`, which GCS grants to one writer only, holds
who took it, and is released by deleting that generation; a lock older than its stale timeout (a
holder that died) is broken. Works against a local emulator when STORAGE_EMULATOR_HOST is set (the
tests).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from taxi_pipeline.storage import held_once_per_thread

log = logging.getLogger(__name__)


def is_gcs(path: str) -> bool:
    return str(path).startswith("gs://")


def split(uri: str) -> tuple[str, str]:
    """gs://bucket/a/b -> ("bucket", "a/b")."""
    if not is_gcs(uri):
        raise ValueError(f"not a gs:// path: {uri!r}")
    bucket, _, name = uri[len("gs://"):].partition("/")
    return bucket, name


def _prefix(uri: str) -> tuple[str, str]:
    bucket, name = split(uri.rstrip("/"))
    return bucket, f"{name}/" if name else ""


def client():
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    from taxi_pipeline.gcp_settings import get_gcp_settings

    return GCSHook(gcp_conn_id=get_gcp_settings().conn_id).get_conn()


def _blob(uri: str):
    bucket, name = split(uri)
    return client().bucket(bucket).blob(name)


def read_text(uri: str) -> str:
    return _blob(uri).download_as_text()


def write_text(uri: str, text: str) -> None:
    """One object, written whole (GCS object writes are atomic)."""
    _blob(uri).upload_from_string(text)


def write_text_if_changed(uri: str, text: str) -> bool:
    """write_text unless the object already holds exactly `text` (its md5); returns whether it wrote."""
    import base64
    import hashlib

    bucket, name = split(uri)
    present = client().bucket(bucket).get_blob(name)
    if present is not None and present.md5_hash == base64.b64encode(hashlib.md5(text.encode()).digest()).decode():
        return False
    write_text(uri, text)
    return True


def exists(uri: str) -> bool:
    return _blob(uri).exists()


def list_names(uri: str) -> list[str]:
    """Every object below a gs:// "directory", as names relative to it."""
    bucket, prefix = _prefix(uri)
    return sorted(b.name[len(prefix):] for b in client().list_blobs(bucket, prefix=prefix))


def list_children(uri: str) -> list[str]:
    """The immediate "subdirectories" and objects of a gs:// "directory" (names, no slash)."""
    bucket, prefix = _prefix(uri)
    pages = client().list_blobs(bucket, prefix=prefix, delimiter="/")
    # every page is read first: the iterator fills in `.prefixes` only as its pages are read
    # (before that it is empty; tests/taxi_pipeline/test_gcs.py checks this against the emulator)
    objects = [b.name[len(prefix):] for b in pages]
    return sorted({*objects, *(p[len(prefix):].rstrip("/") for p in pages.prefixes)})


def glob(pattern: str) -> list[str]:
    """gs:// paths matching a pattern whose wildcards are in its last parts (fnmatch rules)."""
    import fnmatch

    bucket, name = split(pattern)
    fixed = name.split("*")[0].rsplit("/", 1)[0]
    return sorted(f"gs://{bucket}/{b.name}" for b in client().list_blobs(bucket, prefix=fixed + "/")
                  if fnmatch.fnmatchcase(b.name, name))


def delete_tree(uri: str, keep: Iterable[str] = ()) -> None:
    """Delete every object below `uri` except the relative names in `keep`."""
    keep = set(keep)
    bucket, prefix = _prefix(uri)
    store = client()
    for b in list(store.list_blobs(bucket, prefix=prefix)):
        if b.name[len(prefix):] not in keep:
            b.delete()


def _ordered(names: Iterable[str], last: tuple[str, ...]) -> list[str]:
    return sorted(names, key=lambda n: (n.rsplit("/", 1)[-1] in last, n))


def upload_tree(local_dir: str | Path, uri: str, last: tuple[str, ...] = ()) -> list[str]:
    """Publish a local directory at a gs:// "directory": objects of an earlier try that the new
    output does not have are deleted first, then every file is written, the `last` names after
    all others. Returns the relative names written."""
    local = Path(local_dir)
    names = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    delete_tree(uri, keep=names)
    bucket, prefix = _prefix(uri)
    target = client().bucket(bucket)
    for name in _ordered(names, last):
        target.blob(prefix + name).upload_from_filename(str(local / name))
    return names


def _same(a, b) -> bool:
    """Same content: GCS's crc32c (every object has one; md5 is missing on composite objects) and size."""
    return a.crc32c is not None and a.crc32c == b.crc32c and a.size == b.size


def copy_tree(source: str, dest: str, last: tuple[str, ...] = ()) -> list[str]:
    """Server-side copy of a gs:// "directory" to another, with upload_tree's order and clean-up.

    Objects already at `dest` with the source's content are not rewritten, so a retried copy writes
    only what an earlier try did not (nothing, when it had finished). When anything at `dest`
    changes, its `last` objects are deleted first and written again at the end: a destination is
    never complete (has its `last` objects) while it mixes two copies. Returns the names written."""
    src_bucket, src_prefix = _prefix(source)
    dst_bucket, dst_prefix = _prefix(dest)
    store = client()
    sources = {b.name[len(src_prefix):]: b for b in store.list_blobs(src_bucket, prefix=src_prefix)}
    if not sources:
        raise FileNotFoundError(f"nothing to copy under {source}")
    present = {b.name[len(dst_prefix):]: b for b in store.list_blobs(dst_bucket, prefix=dst_prefix)}
    stale = sorted(n for n in present if n not in sources)
    changed = {n for n, b in sources.items() if n not in present or not _same(b, present[n])}
    if not changed and not stale:
        return []
    final = {n for n in sources if n.rsplit("/", 1)[-1] in last}
    for name in sorted(final & present.keys()):  # unpublished first ...
        present[name].delete()
    for name in stale:
        present[name].delete()
    src, dst = store.bucket(src_bucket), store.bucket(dst_bucket)
    written = _ordered(changed | final, last)  # ... and published again last
    for name in written:
        src.copy_blob(sources[name], dst, dst_prefix + name)
    return written


def download_tree(uri: str, local_dir: str | Path) -> list[str]:
    """Copy a gs:// "directory" into a local directory; returns the relative names."""
    bucket, prefix = _prefix(uri)
    names = []
    for b in client().list_blobs(bucket, prefix=prefix):
        relative = b.name[len(prefix):]
        if not relative or relative.endswith("/"):
            continue
        target = Path(local_dir, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        b.download_to_filename(str(target))
        names.append(relative)
    return sorted(names)



# --- a lock object ---------------------------------------------------------------------------

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


def lock(uri: str, holder: str = "", stale_after: float = LOCK_STALE_AFTER, wait: float | None = None,
         poll: float = LOCK_POLL):
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
    content = json.dumps({"holder": holder or "?", "process": _holder_name(),
                          "acquired": datetime.now(timezone.utc).isoformat()})
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
        age = (datetime.now(timezone.utc) - current.time_created).total_seconds() if current.time_created else 0
        if age > stale_after:
            log.warning("Breaking the stale lock %s (%.0f s old, older than %.0f s): held by %s",
                        uri, age, stale_after, _describe(current))
            with contextlib.suppress(NotFound, PreconditionFailed):
                current.delete(if_generation_match=current.generation)
            continue
        if waiting_for != current.generation:
            waiting_for = current.generation
            log.info("Waiting for the lock %s, held by %s", uri, _describe(current))
        if wait is not None and time.monotonic() - started >= wait:
            raise LockTimeout(f"the lock {uri} is held by {_describe(current)}; gave up after {wait:.0f} s "
                              f"(it is broken once older than {stale_after:.0f} s)")
        time.sleep(poll)
    generation = blob.generation
    try:
        yield
    finally:
        try:
            blob.delete(if_generation_match=generation)
        except (NotFound, PreconditionFailed):
            log.warning("The lock %s was broken while held (older than %.0f s?): another writer may have "
                        "interleaved", uri, stale_after)
