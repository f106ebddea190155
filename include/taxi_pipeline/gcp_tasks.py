"""The gcp platform's Python tasks: the local platform's task functions, run on a local mirror of
the run's gs:// folder (the same code: one validation, one comparison, one history).

`local_mirror` copies the parts of the run's GCS folder a task reads into a temporary local
artifact root, runs the task there (TAXI_PLATFORM=local for the duration, so run_layout() points
at the mirror), and publishes the parts it writes back to GCS, also when the task fails (a failed
validation's report is what on-call reads).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from taxi_pipeline import gcs


@contextlib.contextmanager
def local_mirror(context, reads: list[str], writes: list[str], history: bool = False) -> Iterator:
    """Yield the run's layout under a local mirror; `reads`/`writes` are paths relative to the run's folder."""
    from taxi_pipeline.run_context import run_layout

    remote = run_layout(context)
    saved = {k: os.environ.get(k) for k in ("TAXI_PLATFORM", "TAXI_HOME")}
    with tempfile.TemporaryDirectory(prefix="taxi-mirror-") as home:
        os.environ.update(TAXI_PLATFORM="local", TAXI_HOME=home)
        try:
            local = run_layout(context)
            for part in reads:
                gcs.download_tree(f"{remote.run_dir}/{part}", f"{local.run_dir}/{part}")
            if history:
                gcs.download_tree(remote.history_dir, local.history_dir)
            try:
                yield local
            finally:
                for part in writes:
                    path = Path(local.run_dir, part)
                    if path.is_dir():
                        gcs.upload_tree(path, f"{remote.run_dir}/{part}")
                    elif path.is_file():
                        gcs.write_text(f"{remote.run_dir}/{part}", path.read_text())
                if history and Path(local.history_dir).is_dir():
                    gcs.upload_tree(local.history_dir, remote.history_dir)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _variant_reads(variants) -> list[str]:
    return [f"variants/{v}/{part}" for v in variants for part in ("evaluation", "export_check")]


def validate_window(**context) -> dict:
    from taxi_pipeline.tasks import validate_window_artifacts

    with local_mirror(context, reads=["data"], writes=["validation"]):
        return validate_window_artifacts(**context)


def compare_variants(**context) -> list[dict]:
    from taxi_pipeline.branches import selected_variants
    from taxi_pipeline.tasks import compare_variants as compare

    with local_mirror(context, reads=["validation", *_variant_reads(selected_variants(context["params"]))],
                      writes=["comparison.txt", "comparison.json"]):
        return compare(**context)


def record_verdict(**context) -> dict:
    from taxi_pipeline.tasks import record_window_verdict

    with local_mirror(context, reads=["window_comparison"], writes=[], history=True):
        return record_window_verdict(**context)


def read_blessing(context, variant: str) -> dict:
    from taxi_pipeline.comparison import read_blessing as read

    with local_mirror(context, reads=_variant_reads([variant]), writes=[]) as local:
        return read(local, variant)


def read_comparison(context) -> list[dict]:
    import json

    from taxi_pipeline.run_context import run_layout

    return json.loads(gcs.read_text(f"{run_layout(context).run_dir}/comparison.json"))
