"""The blessing policy: when a candidate model may replace the one in service.

Pure Python (no TensorFlow), so the Airflow side can read it. TFMA enforces it on the overall
slice (evaluate.py turns it into thresholds); the verdict and its reasons are written beside the
evaluation.

The bars come from what this model really reaches on the sample: 300 steps on the 2015 window give
AUC 0.934 (`standard`) and 0.931 (`coarse`), and 0.956 on the 15k-trip sample alone, so a floor
of 0.88 fails a model that learned little without failing a normal one. About 23% of trips
are big tippers, so accuracy alone means little: the bar is the eval set's majority-class rate
(what "always predict the majority" scores), not TFX's fixed 0.6.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class BlessingPolicy:
    auc_floor: float = 0.88
    # The candidate's AUC may be at most this much below the baseline's (noise between retrains).
    auc_tolerance: float = 0.01
    # Accuracy must beat the majority-class rate by at least this much.
    accuracy_margin: float = 0.0


@dataclass
class Verdict:
    blessed: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self, variant: str) -> list[str]:
        head = f"{variant}: {'BLESSED' if self.blessed else 'NOT BLESSED'}"
        return [head] + [f"{variant}: {reason}" for reason in self.reasons]
