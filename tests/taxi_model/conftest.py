"""Fixtures for the taxi_model tests: a synthetic window of trips, its transform and a trained model.

Run with the ML runtime: `PYTHONPATH=include .venv-runtime/bin/python -m pytest tests/taxi_model`.
The expensive fixtures are session-scoped so that the transform and the training run once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before anything imports TensorFlow

from model_test_data import EVAL_ROWS, TRAIN_ROWS, runtime_env, synthetic_trips, train_args, write_csv  # noqa: E402

# A test that needs one of these runs TFT or trains a model: `slow`, outside `make check`.
TRAINING_FIXTURES = {"transform_dir", "trained_model", "one_step_model"}


def pytest_collection_modifyitems(items):
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def window_dir(tmp_path_factory) -> Path:
    """A window extract: train in two part files (each with its header), eval in one."""
    root = tmp_path_factory.mktemp("window")
    trips = synthetic_trips(TRAIN_ROWS + EVAL_ROWS, seed=7)
    write_csv(root / "train" / "part-00000.csv", trips[:500])
    write_csv(root / "train" / "part-00001.csv", trips[500:TRAIN_ROWS])
    write_csv(root / "eval" / "part-00000.csv", trips[TRAIN_ROWS:])
    return root


@pytest.fixture(scope="session")
def transform_dir(window_dir, tmp_path_factory) -> Path:
    """The window transformed with the standard variant, launched as Airflow does: `python -m` the module."""
    output = tmp_path_factory.mktemp("variant") / "transform"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "taxi_model.transform",
            "--train",
            str(window_dir / "train" / "part-*.csv"),
            "--eval",
            str(window_dir / "eval" / "part-*.csv"),
            "--variant",
            "standard",
            "--output",
            str(output),
            "--runner=FnApiRunner",
        ],
        check=True,
        env=runtime_env(),
    )
    return output


@pytest.fixture(scope="session")
def trained_model(transform_dir, window_dir, tmp_path_factory) -> dict[str, Path]:
    """A model trained in-process for a few steps, with TF-Serving's warmup requests from the eval
    rows: {'model': SavedModel dir, 'logs': TensorBoard dir}."""
    from taxi_model import trainer

    root = tmp_path_factory.mktemp("trained")
    warmup = str(window_dir / "eval" / "part-*.csv")
    trainer.run_fn(
        train_args(transform_dir, root, train_steps=150, eval_steps=3, batch_size=128, warmup_examples=warmup)
    )
    return {"model": root / "model", "logs": root / "logs"}


@pytest.fixture(scope="session")
def one_step_model(transform_dir, tmp_path_factory) -> Path:
    """The same model after a single step: one that must lose to `trained_model`."""
    from taxi_model import trainer

    root = tmp_path_factory.mktemp("one_step")
    trainer.run_fn(train_args(transform_dir, root, train_steps=1, eval_steps=1, batch_size=32))
    return root / "model"
