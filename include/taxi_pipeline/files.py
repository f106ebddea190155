"""The one file API of the Airflow side: a local path and a `gs://` URI are read and written alike.

Built on Airflow's ObjectStoragePath (fsspec underneath, gcsfs for `gs://`, with the credentials of
the gcp platform's connection), so artifacts, the serving root, reports and history are written by
the same code on both platforms. What an object store lacks is done here once:
- `write_text` and `atomic_directory` publish whole: a local file or folder is written under a
  hidden staging name and renamed into place; a GCS object is written whole by its upload, and a
  folder is published object by object with `copy_tree`'s order.
- `copy_tree(..., last=...)` writes the `last` names (a SavedModel's saved_model.pb) after every
  other object, and rewrites only objects whose content changed (size and CRC32C), so a retried
  copy writes nothing twice and a destination is never complete while it mixes two copies.
- `lock(uri)`: an exclusive lock beside the files it guards (fcntl locally; on GCS a lock object
  created only if absent, taxi_pipeline.gcs_lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# The split files' column types: text ids stay text, and only an empty field is a null ("n/a" in a
# numeric column is a value for validation to report).
SPLIT_DTYPES = {"unique_key": str, "payment_type": str, "company": str}


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def _local(uri: str) -> str:
    return str(uri).removeprefix("file://")


def path(uri: str) -> ObjectStoragePath:
    """The ObjectStoragePath of a local path or a `gs://` URI (the gcp connection's credentials)."""
    from airflow.sdk import ObjectStoragePath

    if str(uri).startswith("gs://"):
        remote = ObjectStoragePath(str(uri), conn_id=_gcp_conn_id())
        # gcsfs caches listings per process; other writers (another worker's push, a rollback) change
        # the bucket meanwhile, and a decision read from a stale listing is wrong: always ask GCS
        remote.fs.invalidate_cache()
        return remote
    return ObjectStoragePath(f"file://{os.path.abspath(_local(uri))}")


def _gcp_conn_id() -> str:
    from taxi_pipeline.gcp_settings import conn_id

    return conn_id()


def _fs(uri: str):
    p = path(uri)
    return p.fs, p.path


def join(uri: str, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *parts])


def exists(uri: str) -> bool:
    fs, p = _fs(uri)
    return fs.exists(p)


def read_text(uri: str) -> str:
    return path(uri).read_text()


def read_bytes(uri: str) -> bytes:
    return path(uri).read_bytes()


def read_json(uri: str):
    return json.loads(read_text(uri))


def read_json_or_none(uri: str):
    return read_json(uri) if exists(uri) else None


def read_csv_rows(uri: str) -> list[dict]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(read_text(uri))))


def write_text(uri: str, text: str) -> None:
    """Write a file whole: readers see the previous content or the new one, never a part."""
    if not is_remote(uri):
        target = Path(_local(uri))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex}")
        tmp.write_text(text)
        tmp.replace(target)
        return
    path(uri).write_text(text)  # one object upload: atomic


def json_text(value) -> str:
    """The project's JSON artifacts: indented, so a person can read them and a diff shows a change."""
    return json.dumps(value, indent=1)


def write_json(uri: str, value) -> None:
    write_text(uri, json_text(value))


def write_text_if_changed(uri: str, text: str) -> bool:
    """write_text unless the file already holds exactly `text`; returns whether it wrote."""
    if exists(uri) and read_text(uri) == text:
        return False
    write_text(uri, text)
    return True


def children(uri: str) -> list[str]:
    """Names of the files and folders directly under `uri` (none if it does not exist)."""
    fs, p = _fs(uri)
    if not fs.isdir(p):
        return []
    return sorted({entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(p, detail=False)} - {""})


def subdirs(uri: str) -> list[str]:
    """Names of the folders directly under `uri`, hidden (staging, retired) ones left out."""
    fs, p = _fs(uri)
    if not fs.isdir(p):
        return []
    return sorted(
        entry["name"].rstrip("/").rsplit("/", 1)[-1]
        for entry in fs.ls(p, detail=True)
        if entry["type"] == "directory" and not entry["name"].rstrip("/").rsplit("/", 1)[-1].startswith(".")
    )


def list_files(uri: str) -> list[str]:
    """Every file below `uri`, as names relative to it."""
    fs, p = _fs(uri)
    if not fs.isdir(p):
        return []
    prefix = p.rstrip("/") + "/"
    return sorted(name[len(prefix) :] for name in fs.find(p) if name.startswith(prefix))


def glob(pattern: str) -> list[str]:
    """The paths matching a pattern (fnmatch wildcards), in the pattern's own scheme."""
    fs, p = _fs(pattern)
    scheme = "gs://" if str(pattern).startswith("gs://") else ""
    return sorted(f"{scheme}{match}" for match in fs.glob(p))


def read_split(directory: str):
    """Every part file of an extracted split as one DataFrame (empty, with no columns, if none)."""
    import pandas as pd

    frames = []
    for part in glob(f"{str(directory).rstrip('/')}/part-*.csv"):
        with path(part).open("r") as handle:
            frame = pd.read_csv(handle, dtype=SPLIT_DTYPES, keep_default_na=False, na_values=[""])
        if len(frame.columns):
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _crc32c(uri: str) -> str | None:
    """The file's CRC32C as GCS reports it (base64): GCS has it for every object, a local file is read."""
    import base64

    if is_remote(uri):
        fs, p = _fs(uri)
        return fs.info(p).get("crc32c")
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(_local(uri), "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()


def _size(uri: str) -> int:
    fs, p = _fs(uri)
    return fs.size(p)


def same_content(a: str, b: str) -> bool:
    return _size(a) == _size(b) and _crc32c(a) == _crc32c(b)


def copy_file(source: str, dest: str) -> None:
    src, dst = path(source), path(dest)
    if not is_remote(dest):
        Path(_local(dest)).parent.mkdir(parents=True, exist_ok=True)
    if src.protocol == dst.protocol:
        src.fs.copy(src.path, dst.path)
    else:
        with src.open("rb") as reader, dst.open("wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)


def delete(uri: str) -> None:
    fs, p = _fs(uri)
    if fs.exists(p):
        fs.rm(p)


def delete_tree(uri: str, keep: Iterable[str] = (), first: Iterable[str] = ()) -> None:
    """Delete every file below `uri` except the relative names in `keep`; the names whose last part
    is in `first` go before the others (a version stops being one before its files go)."""
    keep, first = set(keep), tuple(first)
    names = [n for n in list_files(uri) if n not in keep]
    for name in sorted(names, key=lambda n: (n.rsplit("/", 1)[-1] not in first, n)):
        delete(join(uri, name))
    if not keep and not is_remote(uri):
        shutil.rmtree(_local(uri), ignore_errors=True)  # the empty folders a local tree leaves


def _ordered(names: Iterable[str], last: tuple[str, ...]) -> list[str]:
    return sorted(names, key=lambda n: (n.rsplit("/", 1)[-1] in last, n))


def copy_tree(source: str, dest: str, last: tuple[str, ...] = ()) -> list[str]:
    """Make `dest` a copy of the folder `source` (either local or gs://); returns the names written.

    Files of `dest` that `source` lacks are deleted, and files already there with the same content are
    not rewritten (a retried copy writes only what an earlier try did not). When anything changes,
    the `last` files are deleted first and written again after all the others."""
    sources = list_files(source)
    if not sources:
        raise FileNotFoundError(f"nothing to copy under {source}")
    present = set(list_files(dest))
    stale = sorted(present - set(sources))
    changed = {n for n in sources if n not in present or not same_content(join(source, n), join(dest, n))}
    if not changed and not stale:
        return []
    final = {n for n in sources if n.rsplit("/", 1)[-1] in last}
    for name in sorted(final & present) + stale:  # unpublished first ...
        delete(join(dest, name))
    written = _ordered(changed | final, last)  # ... and published again last
    for name in written:
        copy_file(join(source, name), join(dest, name))
    return written


def move_tree(source: str, dest: str, last: tuple[str, ...] = ()) -> None:
    """Move a folder: a rename locally; on GCS a copy (`last` written last) and a delete of the
    source (`last` deleted first), so neither place ever holds a complete half."""
    if not is_remote(source) and not is_remote(dest):
        target = Path(_local(dest))
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        Path(_local(source)).rename(target)
        return
    copy_tree(source, dest, last=last)
    delete_tree(source, first=last)


def _sweep(dest: Path) -> None:
    for leftover in dest.parent.glob(f".{dest.name}.*-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _publish_local(staging: Path, dest: Path) -> None:
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex}")
        dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(dest)


@contextlib.contextmanager
def atomic_directory(dest: str, last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a fresh local staging folder; when the block succeeds, publish it at `dest`, replacing
    what was there. Locally the staging folder sits beside `dest` and is renamed into place (a
    retry first sweeps a crashed try's leftovers); for a gs:// `dest` it is a temporary folder
    published with copy_tree (`last` written last)."""
    import tempfile

    if is_remote(dest):
        with tempfile.TemporaryDirectory(prefix="taxi-staging-") as staging:
            yield Path(staging)
            if list_files(staging):
                copy_tree(staging, dest, last=last)
            else:  # an empty output replaces what was there
                delete_tree(dest)
        return
    target = Path(_local(dest))
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep(target)
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish_local(staging, target)


def lock(uri: str, holder: str = "", **options):
    """Hold the exclusive lock `uri` (blocking until it is free), re-entrant in a thread (a push and
    the label move after it share one hold). `options`: gcs_lock.lock's stale_after, wait, poll."""
    from taxi_pipeline.gcs_lock import held_once_per_thread

    if str(uri).startswith("gs://"):
        from taxi_pipeline import gcs_lock

        return gcs_lock.lock(uri, holder=holder, **options)
    return held_once_per_thread(os.path.realpath(_local(uri)), lambda: _file_lock(_local(uri)))


@contextlib.contextmanager
def _file_lock(lock_path: str) -> Iterator[None]:
    import fcntl

    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, also by a killed process
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
