"""The approval gate before a promotion: the standard provider's human-in-the-loop ApprovalOperator,
with what the approver needs to decide in its body, and the decision written beside the run."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator


class PromotionApprovalOperator(ApprovalOperator):
    """Approve -> the promotion runs; Reject, or no answer within `response_timeout` (its default is
    Reject) -> the promotion is skipped. Either way the decision, who made it and why it was asked are
    written to `approval.json` in the run's artifacts and said in the log."""

    ui_color = "#fff4d6"

    def __init__(self, *, decision_path: str, **kwargs):
        kwargs.setdefault("defaults", [self.REJECT])
        super().__init__(**kwargs)
        self.decision_path = decision_path

    template_fields = (*ApprovalOperator.template_fields, "decision_path")

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        from taxi_pipeline import files

        chosen = (event.get("chosen_options") or [self.REJECT])[0]
        by = event.get("responded_by_user")
        who = (by or {}).get("name") if isinstance(by, dict) else by
        decision = {
            "decision": "approved" if chosen == self.APPROVE else "rejected",
            "by": who or f"nobody: no answer in time, so the default ({self.REJECT})",
            "at": str(event.get("responded_at") or ""),
            "asked": self.subject,
        }
        files.write_json(self.decision_path, decision)
        self.log.info("Promotion %s by %s", decision["decision"], decision["by"])
        if decision["decision"] == "rejected":
            self.log.info("Not promoted: the served model is unchanged (%s)", self.decision_path)
        return super().execute_complete(context, event)
