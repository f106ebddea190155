"""The comparison of a run's variants: rows, AUC, accuracy, blessed, why."""

from __future__ import annotations

from taxi_pipeline import files
from taxi_pipeline.layout import RunLayout


def read_blessing(layout: RunLayout, variant: str) -> dict:
    """The verdict on a variant of the run: the evaluation's (taxi_model.blessing.Verdict as
    written), overruled when the export check found the exported model unservable. A model whose
    export was not checked is not deployable either (the check is the step before the push)."""
    blessing = files.read_json(f"{layout.evaluation_dir(variant)}/blessing.json")
    report = f"{layout.export_check_dir(variant)}/report.json"
    if not files.exists(report):
        return {
            **blessing,
            "blessed": False,
            "reasons": blessing["reasons"] + [f"the export was not checked (no {report})"],
        }
    export = files.read_json(report)
    if not export["servable"]:
        return {
            **blessing,
            "blessed": False,
            "export_check": export,
            "reasons": blessing["reasons"] + [f"export: {reason}" for reason in export["reasons"]],
        }
    return {**blessing, "export_check": export}


def comparison_rows(layout: RunLayout, variants: list[str], windows: dict[str, str] | None = None) -> list[dict]:
    """One row per variant (a branch): its data, metrics, verdict and the AUC of its baseline (the
    model in service, on the same eval split) when it had one. `windows`: the window each branch
    trained on, when not the run's own (taxi_sliding_window)."""
    rows = []
    for variant in variants:
        validation = files.read_json(f"{layout.validation_dir((windows or {}).get(variant, ''))}/report.json")
        blessing = read_blessing(layout, variant)
        metrics = blessing["metrics"]
        baseline_auc = None
        if blessing.get("baseline"):
            evaluation = files.read_json(f"{layout.evaluation_dir(variant)}/metrics.json")
            baseline_auc = evaluation.get("baseline", {}).get("overall", {}).get("auc")
        rows.append(
            {
                "variant": variant,
                "train_rows": validation["rows"]["train"],
                "eval_rows": int(metrics.get("example_count", validation["rows"]["eval"])),
                "auc": metrics.get("auc"),
                "accuracy": metrics.get("binary_accuracy"),
                "majority_class_rate": metrics.get("majority_class_rate"),
                "blessed": blessing["blessed"],
                "why": "; ".join(blessing["reasons"]),
                "baseline": blessing.get("baseline"),
                "baseline_auc": baseline_auc,
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    header = f"{'variant':<10} {'train rows':>10} {'eval rows':>9} {'AUC':>6} {'accuracy':>8} {'blessed':>7}  why"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['variant']:<10} {r['train_rows']:>10} {r['eval_rows']:>9} {r['auc']:>6.3f} "
            f"{r['accuracy']:>8.3f} {'yes' if r['blessed'] else 'NO':>7}  {r['why']}"
        )
    return "\n".join(lines)
