"""The deploy decisions, written once for both platforms: should a variant be pushed (and if not,
why), which variant is the champion, what a rollback does. The local platform's tasks and the gcp
platform's operators (which then also upload to Vertex AI) call these, so the skip messages on-call
reads are the same text on both.

A decision not to deploy is `NotDeployed` (its message says why); `skip_if_not_deployed()` turns it
into Airflow's skip, the state on-call sees.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from taxi_pipeline import files
from taxi_pipeline.serving_root import (
    CHAMPION_MODEL,
    STABLE_LABEL,
    DeploymentRecord,
    PushResult,
    Rollback,
    ServingRoot,
    version_for,
)

log = logging.getLogger(__name__)


class NotDeployed(Exception):
    """Nothing was deployed, and that is a verdict, not a failure: the message says why."""


@contextlib.contextmanager
def skip_if_not_deployed() -> Iterator[None]:
    from airflow.sdk.exceptions import AirflowSkipException

    try:
        yield
    except NotDeployed as decision:
        raise AirflowSkipException(str(decision)) from decision


def deployment_record(context, model: str, variant: str, blessing: dict, minute: int = 0) -> DeploymentRecord:
    """The record of a push of the run's `variant` (a branch) to `model`: its version is the run's
    window end as YYYYMMDDHHMM, plus `minute` (see WINDOW_WINNER_MINUTE)."""
    from taxi_pipeline.run_context import run_end, run_layout

    layout = run_layout(context)
    return DeploymentRecord(
        model=model,
        version=version_for(run_end(context)) + minute,
        variant=variant,
        dag_id=layout.dag_id,
        run_id=layout.run_id,
        window=str(layout.window),
        source=layout.model_dir(variant),
        metrics=blessing["metrics"],
        reasons=blessing["reasons"],
    )


def push_blessed_variant(root: ServingRoot, context, variant: str, served_model: str) -> PushResult:
    """Push the run's model of `variant` as its version of `served_model`, if it was blessed and no
    newer window's model is served."""
    from taxi_pipeline.comparison import read_blessing
    from taxi_pipeline.run_context import run_layout

    blessing = read_blessing(run_layout(context), variant)
    if not blessing["blessed"]:
        raise NotDeployed(f"{variant} was not blessed, nothing pushed: " + "; ".join(blessing["reasons"]))
    result = root.push(deployment_record(context, served_model, variant, blessing))
    log.info(result.message)
    if not result.pushed:
        raise NotDeployed(result.message)
    announce(context, served_model, result.version)
    return result


def announce(context, model: str, version: int) -> None:
    """The served model's asset event of this push (the task's outlet) carries its version and window
    end: taxi_batch_scoring re-scores that day with a new champion (taxi_pipeline.assets)."""
    from taxi_pipeline.assets import served_model
    from taxi_pipeline.run_context import run_end

    events = context.get("outlet_events")
    if events is not None:  # None: called outside a task (a test of the deploy logic alone)
        events[served_model(model)].extra = {"version": version, "window_end": run_end(context).isoformat()}


APPROVAL_MODES = ("never", "always", "when_close")
# `when_close` asks a person when the champion beats the model in service by less than this much AUC
# on the same eval split. 0.005 is about 1.5 standard errors of AUC at the sample's 2,600 eval trips
# (AUC ~0.93): a gain below it is within noise, so a person should look before it replaces the model.
APPROVAL_MARGIN = 0.005


def approval_question(mode: str, champion: dict | None, baseline_auc: float | None) -> str | None:
    """Why a person must approve the promotion of `champion` (a comparison row), or None when no
    one need: the `require_approval` Param's mode, its AUC gain over its baseline (the model in service)."""
    if mode not in APPROVAL_MODES:
        raise ValueError(f"require_approval {mode!r} is not one of {APPROVAL_MODES}")
    if mode == "never" or champion is None:
        return None  # nothing blessed: promote_champion says so and promotes nothing
    gain = None if baseline_auc is None else champion["auc"] - baseline_auc
    versus = (
        "no model in service to compare with"
        if gain is None
        else f"AUC {champion['auc']:.4f} vs {baseline_auc:.4f} in service, a gain of {gain:+.4f}"
    )
    if mode == "always":
        return f"Promote {champion['variant']} ({versus})? Every promotion is approved (require_approval=always)."
    if gain is not None and gain < APPROVAL_MARGIN:
        return (
            f"Promote {champion['variant']} ({versus})? Its gain is below the margin {APPROVAL_MARGIN} "
            "(require_approval=when_close)."
        )
    return None


# taxi_sliding_window's winner, promoted to the champion model, takes its window end plus one minute:
# a month ends at midnight, where a taxi_daily_retrain window ends too, and the two versions of one
# model must not be the same number (the serving root never lets one DAG replace another's version).
WINDOW_WINNER_MINUTE = 1


def window_rows(rows: list[dict], comparison: dict, versus: dict) -> list[dict]:
    """taxi_sliding_window's rows for the promotion (the comparison rows of its two branches): only
    the run's candidate may be promoted, and only when it is significantly better than the model served
    at `stable` on the newest month (or nothing is served). Each row says why, with the verdict."""
    out = []
    for row in rows:
        row = {**row, "auc": comparison["auc"][row["variant"]], "verdict": comparison["sentence"]}
        if row["variant"] != versus["candidate"]:
            row.update(blessed=False, why=f"not the run's candidate ({versus['candidate']}: {versus['why']})")
        elif not row["blessed"]:
            pass  # its own evaluation or export check says why
        elif versus["stable"] is None:
            row.update(baseline_auc=None, why=f"{versus['why']}; {versus['sentence']}")
        else:
            row.update(baseline_auc=versus["auc"]["stable"], why=f"{versus['why']}; {versus['sentence']}")
            if not versus["significant"]:
                row.update(blessed=False, why=f"not significantly better than the served model: {versus['sentence']}")
        out.append(row)
    return out


def choose_champion(rows: list[dict]) -> dict:
    """The blessed variant with the best AUC, from the run's comparison rows."""
    blessed = [r for r in rows if r["blessed"]]
    if not blessed:
        raise NotDeployed("no variant was blessed: the served model is unchanged")
    return max(blessed, key=lambda r: r["auc"])


def promote_champion(root: ServingRoot, context) -> tuple[dict, PushResult]:
    """Push the champion as the run's version of `taxi` and point `stable` at it (one hold of the lock)."""
    from taxi_pipeline.comparison import read_blessing
    from taxi_pipeline.run_context import run_layout

    layout = run_layout(context)
    champion = choose_champion(files.read_json(files.join(layout.run_dir, "comparison.json")))
    blessing = read_blessing(layout, champion["variant"])
    if "verdict" in champion:  # a sliding window's winner: recorded with its verdict
        blessing = {**blessing, "reasons": [*blessing["reasons"], champion["verdict"], champion["why"]]}
    minute = WINDOW_WINNER_MINUTE if "verdict" in champion else 0
    record = deployment_record(context, CHAMPION_MODEL, champion["variant"], blessing, minute)
    result = root.push_and_label(record, STABLE_LABEL)
    log.info("Champion: %s (AUC %.4f); %s", champion["variant"], champion["auc"], result.message)
    if not result.pushed:
        raise NotDeployed(result.message)
    log.info("%s label %r -> version %s", CHAMPION_MODEL, STABLE_LABEL, result.version)
    announce(context, CHAMPION_MODEL, result.version)
    return champion, result


def roll_back(root: ServingRoot, params: dict, run_id: str) -> Rollback:
    """The serving root's side of the `taxi_serving_rollback` DAG, from its Params (the model, the
    target version, why). A wrong target fails at once with the reason (AirflowFailException: a retry
    would not make it right); nothing was changed."""
    from airflow.sdk.exceptions import AirflowFailException

    from taxi_pipeline.serving_root import RollbackError

    try:
        result = root.roll_back(params["model"], params["target_version"], params["reason"], run_id)
    except RollbackError as error:
        raise AirflowFailException(str(error)) from error
    log.info("%s. Reason: %s", result.message(), params["reason"])
    return result
