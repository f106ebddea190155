"""Airflow pools of the project: bounded concurrency for the heavy steps and for deployment."""

from __future__ import annotations

import os
import subprocess
import sys

# Transform, train, evaluate and compare each want a core: a backfill may not starve the daily run.
HEAVY_POOL = "taxi_heavy"
# Pushes and label moves are serialized, so two deployments never interleave.
DEPLOY_POOL = "taxi_deploy"
POOLS = {
    HEAVY_POOL: (2, "TFT, training and TFMA steps: one per core"),
    DEPLOY_POOL: (1, "pushes to the serving root, one at a time"),
}


def ensure_pools(env: dict[str, str]) -> None:
    """Create or update the pools in the Airflow metadata DB that `env` points at."""
    for name, (slots, description) in POOLS.items():
        subprocess.run(
            [sys.executable, "-m", "airflow", "pools", "set", name, str(slots), description],
            check=True,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
        )


if __name__ == "__main__":  # on an Airflow of one's own: python -m taxi_pipeline.pools (README, "Deploying")
    ensure_pools({})
