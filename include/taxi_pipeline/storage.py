"""Atomic publication of artifact directories.

A task writes into a staging directory beside the destination and publishes it with renames, so
readers see the previous complete output or the new complete output, never a partial one. A retry
first sweeps the staging leftovers of a crashed try.
"""
from __future__ import annotations

import shutil
import threading
import uuid
from collections import Counter
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator


def _sweep(dest: Path) -> None:
    for leftover in dest.parent.glob(f".{dest.name}.*-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def publish(staging: Path, dest: Path) -> None:
    """Put the complete `staging` directory at `dest`, replacing what was there."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex}")
        dest.rename(old)
        staging.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(dest)


@contextmanager
def atomic_directory(dest: str) -> Iterator[Path]:
    """Yield a fresh staging directory; when the block succeeds, publish it at `dest`."""
    target = Path(dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep(target)
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex}")
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, target)


def write_text_atomically(path: str, text: str) -> None:
    """Write a small file under a temporary name and rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex}")
    tmp.write_text(text)
    tmp.replace(target)


_held = threading.local()


@contextmanager
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
