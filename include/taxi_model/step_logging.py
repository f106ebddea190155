"""How the runtime's steps log: their own lines at INFO, the libraries' from WARNING up.

TFT, TFMA, Beam and TensorFlow log every feature, vocabulary hint and state cache at INFO (absl's
`Feature ... has no shape`, `consider using tft.experimental.approximate_vocabulary`): hundreds of
lines a run that say nothing about it. Their warnings and errors still show.
"""

from __future__ import annotations

import logging

LIBRARIES = ("absl", "tensorflow", "apache_beam", "tensorflow_transform", "tensorflow_model_analysis", "tfx_bsl")


def configure() -> None:
    """Called by each step's `__main__`: replaces any handler TensorFlow set on import."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
