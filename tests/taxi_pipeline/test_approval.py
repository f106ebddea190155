"""When a person must approve a promotion (the `require_approval` Param of taxi_daily_retrain)."""

from __future__ import annotations

import pytest

from taxi_pipeline.deployment import APPROVAL_MARGIN, approval_question

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
