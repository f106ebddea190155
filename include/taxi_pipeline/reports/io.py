"""Reading and writing report inputs and outputs under a local or a `gs://` artifact root (fsspec)."""
from __future__ import annotations

import json


def _fs(path: str):
    import fsspec

    return fsspec.core.url_to_fs(path)


def exists(path: str) -> bool:
    fs, p = _fs(path)
    return fs.exists(p)


def read_json(path: str):
    fs, p = _fs(path)
    with fs.open(p, "r") as f:
        return json.loads(f.read())


def read_json_or_none(path: str):
    return read_json(path) if exists(path) else None


def read_csv_rows(path: str) -> list[dict]:
    import csv
    import io

    fs, p = _fs(path)
    with fs.open(p, "r") as f:
        return list(csv.DictReader(io.StringIO(f.read())))


def read_split(directory: str):
    """Every part file of an extracted split as one DataFrame (empty if there is none)."""
    import pandas as pd

    fs, p = _fs(directory)
    parts = sorted(fs.glob(f"{p}/part-*.csv"))
    frames = []
    for part in parts:
        with fs.open(part, "r") as f:
            frame = pd.read_csv(f, dtype={"unique_key": str, "payment_type": str, "company": str},
                                keep_default_na=False, na_values=[""])
        if len(frame.columns):
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def subdirs(directory: str) -> list[str]:
    """Names of the folders directly under `directory` (not hidden staging ones)."""
    fs, p = _fs(directory)
    if not fs.exists(p):
        return []
    names = [entry["name"].rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(p, detail=True)
             if entry["type"] == "directory"]
    return sorted(n for n in names if not n.startswith("."))


def write_text(path: str, text: str) -> None:
    """Atomically: a local file is written under a temporary name and renamed; a GCS object is
    published whole by the upload itself."""
    if "://" not in path or path.startswith("file://"):
        from taxi_pipeline.storage import write_text_atomically

        write_text_atomically(path.removeprefix("file://"), text)
        return
    fs, p = _fs(path)
    with fs.open(p, "w") as f:
        f.write(text)
