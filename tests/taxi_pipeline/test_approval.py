"""When a person must approve a promotion (the `require_approval` Param of taxi_daily_retrain)."""

from __future__ import annotations

import pytest

from taxi_pipeline.deployment import APPROVAL_MARGIN, NotDeployed, approval_question, choose_champion, window_rows

CHAMPION = {"variant": "coarse", "auc": 0.9300, "blessed": True}


def test_never_asks_and_always_asks():
    assert approval_question("never", CHAMPION, 0.8) is None
    question = approval_question("always", CHAMPION, 0.9290)
    assert question.startswith("Promote coarse (AUC 0.9300 vs 0.9290 in service, a gain of +0.0010)?")
    assert "require_approval=always" in question


def test_when_close_asks_only_below_the_margin():
    close = approval_question("when_close", CHAMPION, 0.9300 - APPROVAL_MARGIN / 2)
    assert close is not None and f"below the margin {APPROVAL_MARGIN}" in close
    assert approval_question("when_close", CHAMPION, 0.9300 - 2 * APPROVAL_MARGIN) is None
    worse = approval_question("when_close", CHAMPION, 0.9350)  # blessed within the tolerance, yet below
    assert worse is not None and "a gain of -0.0050" in worse


def test_nothing_to_compare_with_or_nothing_blessed():
    assert approval_question("when_close", CHAMPION, None) is None  # the first model: nothing in service
    assert "no model in service" in approval_question("always", CHAMPION, None)
    assert approval_question("always", None, None) is None  # nothing blessed: nothing to promote


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        approval_question("sometimes", CHAMPION, 0.9)


# taxi_sliding_window's promotion rows (deployment.window_rows): only the candidate, only when it is
# significantly better than the served model or nothing is served.
COMPARISON = {"auc": {"recent": 0.91, "long": 0.89}, "sentence": "the recent-window model's AUC is 0.020 higher"}


def rows(blessed_recent: bool = True) -> list[dict]:
    return [
        {"variant": "recent", "auc": 0.9, "blessed": blessed_recent, "why": "auc 0.90 >= floor", "baseline_auc": None},
        {"variant": "long", "auc": 0.88, "blessed": True, "why": "auc 0.88 >= floor", "baseline_auc": None},
    ]


def versus(significant: bool | None, stable_auc: float | None = 0.85) -> dict:
    head = {"candidate": "recent", "why": "the verdict's winner", "sentence": "vs the served version"}
    if significant is None:
        return {**head, "stable": None, "significant": None}
    return {**head, "stable": {"version": "201501010000"}, "auc": {"stable": stable_auc}, "significant": significant}


def test_the_candidate_significantly_better_than_the_served_model_is_offered():
    recent, long = window_rows(rows(), COMPARISON, versus(True))
    assert choose_champion([recent, long]) is recent
    assert recent["auc"] == 0.91 and recent["baseline_auc"] == 0.85  # the exact AUCs of the comparison
    assert recent["verdict"] == COMPARISON["sentence"] and "vs the served version" in recent["why"]
    assert not long["blessed"] and long["why"].startswith("not the run's candidate (recent")


def test_with_nothing_served_the_candidate_is_offered_and_the_gate_says_so():
    recent, _ = window_rows(rows(), COMPARISON, versus(None))
    assert recent["blessed"] and recent["baseline_auc"] is None
    assert "no model in service" in approval_question("always", recent, recent["baseline_auc"])


def test_a_candidate_not_significantly_better_or_not_blessed_is_not_offered():
    recent, long = window_rows(rows(), COMPARISON, versus(False))
    assert not recent["blessed"] and recent["why"].startswith("not significantly better than the served model")
    with pytest.raises(NotDeployed, match="no variant was blessed"):
        choose_champion([recent, long])
    recent, _ = window_rows(rows(blessed_recent=False), COMPARISON, versus(True))
    assert not recent["blessed"] and recent["why"] == "auc 0.90 >= floor"  # its own verdict says why
