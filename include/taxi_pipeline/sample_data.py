"""The real Chicago taxi sample: taken out of the tfx 1.21.0 wheel and checked against recorded sums.

The `tfx` package does not install here, but its wheel ships two samples of the public table
(15,002 and 10,000 trips, 2013-2016). `pip download --no-deps` fetches the wheel; we unzip only the
CSVs and verify their sha256 before anything loads them.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

TFX_WHEEL = "tfx==1.21.0"
TFX_WHEEL_FILE = "tfx-1.21.0-py3-none-any.whl"


@dataclass(frozen=True)
class SampleFile:
    name: str  # local file name; also the source tag that seeds unique_key
    member: str  # path inside the wheel
    sha256: str
    rows: int


SAMPLE_FILES = (
    SampleFile(
        "taxi_simple.csv",
        "tfx/examples/chicago_taxi_pipeline/data/simple/data.csv",
        "cdaf0b5931442ef47693f408f25a37af710aca23fccb90a78f00930e89548805",
        15_002,
    ),
    SampleFile(
        "taxi_external.csv",
        "tfx/components/testdata/external/csv/data.csv",
        "f547ba630a9ab57915977f3e79b8352fadad72eb562cdf0796983b759b1851fb",
        10_000,
    ),
)


class SampleDataError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download_wheel(dest: Path) -> Path:
    wheel = dest / TFX_WHEEL_FILE
    if not wheel.exists():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", TFX_WHEEL, "--dest", str(dest)],
            check=True,
        )
    return wheel


def ensure_sample_files(data_dir: Path) -> list[Path]:
    """The verified sample CSVs under `data_dir`, fetched and unzipped when missing."""
    paths = [data_dir / f.name for f in SAMPLE_FILES]
    data_dir.mkdir(parents=True, exist_ok=True)
    # One fetch at a time: parallel test workers (pytest -n) share the cache.
    with open(data_dir / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [f for f, p in zip(SAMPLE_FILES, paths, strict=True) if not p.exists()]
        if missing:
            wheel = _download_wheel(data_dir / "wheel")
            with zipfile.ZipFile(wheel) as zf:
                for f in missing:
                    tmp = data_dir / f"{f.name}.tmp"
                    tmp.write_bytes(zf.read(f.member))
                    tmp.replace(data_dir / f.name)
    for f, p in zip(SAMPLE_FILES, paths, strict=True):
        actual = _sha256(p)
        if actual != f.sha256:
            raise SampleDataError(
                f"{p}: sha256 {actual} does not match the recorded {f.sha256}; delete it to fetch it again"
            )
    return paths
