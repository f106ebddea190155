"""gs:// paths for the gcp platform, through the google provider's GCSHook (its connection's credentials).

GCS has no directory rename, so a "directory" is published object by object in an order that keeps
readers safe: stale objects of an earlier try are deleted, the new objects are written, and the
`last` ones (a SavedModel's saved_model.pb, a marker) are written after all others. A single object
write is atomic. Works against a local emulator when STORAGE_EMULATOR_HOST is set (the tests).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


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


def copy_tree(source: str, dest: str, last: tuple[str, ...] = ()) -> list[str]:
    """Server-side copy of a gs:// "directory" to another, with upload_tree's order and clean-up."""
    src_bucket, src_prefix = _prefix(source)
    names = list_names(source)
    if not names:
        raise FileNotFoundError(f"nothing to copy under {source}")
    delete_tree(dest, keep=names)
    store = client()
    dst_bucket, dst_prefix = _prefix(dest)
    src, dst = store.bucket(src_bucket), store.bucket(dst_bucket)
    for name in _ordered(names, last):
        src.copy_blob(src.blob(src_prefix + name), dst, dst_prefix + name)
    return names


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

