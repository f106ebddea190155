"""Atomic output directories: a step's output appears whole or not at all.

(Not named `io`: transform.py runs as a script, and its folder must not shadow the stdlib.)
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import tensorflow as tf


@contextlib.contextmanager
def atomic_output_dir(output_dir: str) -> Iterator[str]:
    """Yields a fresh sibling staging dir; on success it replaces `output_dir`, on error it is deleted.

    A crash never leaves a half-written `output_dir`, and a rerun replaces the previous output
    (the old one is moved aside before the new one is renamed in, then deleted). Renames of local
    directories are atomic; on object stores (gs://) a directory rename copies object by object,
    so there only the staging-then-rename order is guaranteed, not atomicity.
    """
    output_dir = output_dir.rstrip("/")
    for leftover in tf.io.gfile.glob(f"{output_dir}.tmp-*") + tf.io.gfile.glob(f"{output_dir}.old-*"):
        remove_dir(leftover)  # a killed earlier try's staging: this try starts clean
    staging_dir = f"{output_dir}.tmp-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(staging_dir)
    try:
        yield staging_dir
        replace_dir(staging_dir, output_dir)
    finally:
        remove_dir(staging_dir)  # already gone after a successful replace


def replace_dir(new_dir: str, output_dir: str) -> None:
    """Renames `new_dir` to `output_dir`, replacing any existing `output_dir`."""
    old_dir = f"{output_dir}.old-{uuid.uuid4().hex}"
    had_old = tf.io.gfile.exists(output_dir)
    if had_old:
        tf.io.gfile.rename(output_dir, old_dir)
    try:
        tf.io.gfile.rename(new_dir, output_dir)
    except BaseException:
        if had_old:  # put the previous output back rather than leave none
            tf.io.gfile.rename(old_dir, output_dir)
        raise
    if had_old:
        remove_dir(old_dir)


def remove_dir(path: str) -> None:
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)
