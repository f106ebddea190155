"""A branch: one model of a run, a preprocessing variant trained on one of the run's windows.

taxi_daily_retrain has a branch per variant, all on the run's window and judged on its eval split
against the variant's served model. taxi_sliding_window has `recent` and `long`, each on its own
window and both judged on every trip of the `newest` window, with no baseline (each is pushed to
a served model of its own, `deploy_as`). The platform builds the same stages
(transform, train, evaluate) for any branch; the paths come from the run's layout in templates.
"""

from __future__ import annotations

from dataclasses import dataclass


def run_path(expression: str) -> str:
    """A template of a path of the run's layout, e.g. run_path("model_dir('coarse')")."""
    return "{{ taxi_run()." + expression + " }}"


@dataclass(frozen=True)
class Branch:
    name: str  # its task group and its artifact folder (variants/<name>/)
    variant: str  # its preprocessing variant (taxi_model.variants)
    window: str = ""  # the named window it trains on ("" = the run's own window)
    eval_window: str | None = None  # None: judged on its window's eval split; else on every trip of that window
    served_model: str | None = None  # the served model whose newest version is its baseline
    deploy_as: str | None = None  # the served model it is pushed to, when it has no baseline (sliding window)

    def split_glob(self, split: str) -> str:
        return run_path(f"split_glob('{split}', '{self.window}')")

    @property
    def eval_glob(self) -> str:
        if self.eval_window is None:
            return self.split_glob("eval")
        return run_path(f"window_glob('{self.eval_window}')")

    @property
    def pushed_as(self) -> str | None:
        """The served model its push publishes to: its baseline's model, or `deploy_as`."""
        return self.served_model or self.deploy_as

    def path(self, kind: str) -> str:
        """transform_dir, model_dir, logs_dir or evaluation_dir of the branch."""
        return run_path(f"{kind}('{self.name}')")


def selected_variants(params) -> list[str]:
    """The variants a taxi_daily_retrain run trains: its `variants` Param, in the contract's order."""
    from taxi_model.variants import VARIANTS

    chosen = params.get("variants") or list(VARIANTS)
    unknown = sorted(set(chosen) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}: the variants are {list(VARIANTS)}")
    return [v for v in VARIANTS if v in chosen]
