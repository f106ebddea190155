"""Model variants: the knobs that differ between the models trained side by side on one window.

Pure Python (no TensorFlow): the Airflow DAG imports this at parse time to fan out one
transform/train/evaluate branch per variant. All variants share the label and the feature list;
adding a variant is one more entry in `VARIANTS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    bucket_count: int  # quantile buckets per coordinate feature
    vocab_size: int  # most frequent values kept per vocabulary feature
    oov_buckets: int  # hash buckets for the values outside the vocabulary


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("standard", bucket_count=10, vocab_size=1000, oov_buckets=10),
        Variant("coarse", bucket_count=2, vocab_size=10, oov_buckets=1),
    )
}
DEFAULT_VARIANT = "standard"


def variant(name: str) -> Variant:
    """The variant called `name`; ValueError naming the known ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown model variant {name!r}; known variants: {', '.join(VARIANTS)}") from None
