"""The model report of a run: each model's TFMA evaluation, its blessing, and the run's comparison."""

from __future__ import annotations

import re

from taxi_pipeline import files
from taxi_pipeline.layout import RunLayout
from taxi_pipeline.reports import html as h

CANDIDATE, BASELINE = "candidate", "baseline"
OVERALL_METRICS = (
    "example_count",
    "auc",
    "binary_accuracy",
    "precision",
    "recall",
    "calibration",
    "binary_crossentropy",
)
TOP_COMPANIES = 10
DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")  # trip_start_day 1..7 (BigQuery DAYOFWEEK)
COLORS = {CANDIDATE: "#2f6fb3", BASELINE: "#7f8c9a"}


def _slices(table: dict, feature: str) -> dict:
    """{value: metrics} of a one-feature slice, e.g. trip_start_hour=3 -> {3: {...}}."""
    out = {}
    for name, metrics in table.items():
        match = re.fullmatch(rf"{feature}=(.*)", name)
        if match and " x " not in name:
            value = match.group(1)
            out[int(value) if value.lstrip("-").isdigit() else value] = metrics
    return out


def _day_month(table: dict) -> dict[tuple[int, int], dict]:
    out = {}
    for name, metrics in table.items():
        match = re.fullmatch(r"trip_start_day=(\d+) x trip_start_month=(\d+)", name)
        if match:
            out[int(match.group(1)), int(match.group(2))] = metrics
    return out


def hour_figure(models: dict) -> str:
    fig, ax = h.figure(5.4, 3.0)
    for model, table in models.items():
        by_hour = _slices(table, "trip_start_hour")
        hours = sorted(by_hour)
        ax.plot(hours, [by_hour[x].get("auc") for x in hours], marker="o", ms=3, label=model, color=COLORS.get(model))
    ax.set_xlabel("hour of day (trip start)")
    ax.set_ylabel("AUC")
    ax.set_xticks(range(0, 24, 3))
    ax.set_title("AUC by hour of day")
    ax.legend(fontsize=7)
    return h.svg(fig)


def company_rows(models: dict) -> list[list]:
    by_company = _slices(models[CANDIDATE], "company")
    top = sorted(by_company, key=lambda c: -by_company[c].get("example_count", 0))[:TOP_COMPANIES]
    base = _slices(models.get(BASELINE, {}), "company")
    return [
        [
            c,
            by_company[c].get("example_count"),
            by_company[c].get("auc"),
            base.get(c, {}).get("auc"),
            by_company[c].get("binary_accuracy"),
        ]
        for c in top
    ]


def company_figure(rows: list[list], with_baseline: bool) -> str:
    import numpy as np

    fig, ax = h.figure(5.8, 3.4)
    y = np.arange(len(rows))
    ax.barh(
        y - (0.2 if with_baseline else 0),
        [r[2] or 0 for r in rows],
        height=0.4 if with_baseline else 0.7,
        color=COLORS[CANDIDATE],
        label=CANDIDATE,
    )
    if with_baseline:
        ax.barh(y + 0.2, [r[3] or 0 for r in rows], height=0.4, color=COLORS[BASELINE], label=BASELINE)
    ax.set_yticks(y, [f"{str(r[0])[:28]} ({int(r[1])})" for r in rows], fontsize=6.5)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AUC")
    ax.set_title(f"AUC of the top {len(rows)} companies (trips)")
    ax.legend(fontsize=7)
    return h.svg(fig)


def day_month_figure(table: dict) -> str:
    import numpy as np

    cells = _day_month(table)
    grid = np.full((7, 12), np.nan)
    for (day, month), metrics in cells.items():
        if 1 <= day <= 7 and 1 <= month <= 12 and metrics.get("example_count", 0) >= 5:
            grid[day - 1, month - 1] = metrics.get("auc", np.nan)
    fig, ax = h.figure(6.0, 3.0)
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(12), [str(m) for m in range(1, 13)])
    ax.set_yticks(range(7), DAYS)
    ax.set_xlabel("month")
    ax.set_title("AUC by day of week x month (cells with >= 5 trips)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    return h.svg(fig)


def calibration_figure(plots: dict) -> str:
    fig, ax = h.figure(3.6, 3.4)
    ax.plot([0, 1], [0, 1], ls="--", color="#b0b7c0", lw=1, label="perfect")
    for model, data in plots.items():
        bins = [b for b in data.get("calibration", []) if b["examples"]]
        ax.plot(
            [b["predictions"] / b["examples"] for b in bins],
            [b["labels"] / b["examples"] for b in bins],
            marker="o",
            ms=3,
            label=model,
            color=COLORS.get(model),
        )
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed big-tipper rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Calibration")
    ax.legend(fontsize=7)
    return h.svg(fig)


def confusion_figure(matrix: dict, title: str) -> str:
    import numpy as np

    grid = np.array(
        [[matrix["true_negatives"], matrix["false_positives"]], [matrix["false_negatives"], matrix["true_positives"]]],
        dtype=float,
    )
    fig, ax = h.figure(3.4, 3.0)
    ax.imshow(grid, cmap="Blues")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(
            j,
            i,
            f"{int(value):,}",
            ha="center",
            va="center",
            color="white" if value > grid.max() / 2 else "black",
            fontsize=11,
        )
    ax.set_xticks([0, 1], ["not big", "big tipper"])
    ax.set_yticks([0, 1], ["not big", "big tipper"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"{title} (threshold {matrix['threshold']:.2f})", fontsize=9)
    return h.svg(fig)


def model_section(name: str, evaluation_dir: str) -> tuple[str, dict]:
    blessing = files.read_json(f"{evaluation_dir}/blessing.json")
    models = files.read_json(f"{evaluation_dir}/metrics.json")
    plots = files.read_json_or_none(f"{evaluation_dir}/plots.json") or {}
    candidate = models.get(CANDIDATE, {})
    overall = {m: t.get("overall", {}) for m, t in models.items()}
    metrics = blessing["metrics"]
    facts = {
        "blessed": blessing["blessed"],
        "auc": metrics.get("auc"),
        "accuracy": metrics.get("binary_accuracy"),
        "examples": metrics.get("example_count"),
        "baseline": blessing.get("baseline"),
    }
    parts = [
        f'<section id="model-{h.slug(name)}"><h2>{h.esc(name)}</h2>',
        h.verdict("BLESSED" if blessing["blessed"] else "NOT BLESSED", "ok" if blessing["blessed"] else "bad"),
        h.headline(
            [
                ("AUC", metrics.get("auc")),
                ("accuracy", metrics.get("binary_accuracy")),
                ("majority-class rate", metrics.get("majority_class_rate")),
                ("eval trips", metrics.get("example_count")),
            ]
        ),
        '<ul class="reasons">' + "".join(f"<li>{h.esc(r)}</li>" for r in blessing["reasons"]) + "</ul>",
        f"<p>Baseline (the model in service): <code>{h.esc(blessing.get('baseline') or 'none')}</code></p>",
    ]
    columns = [m for m in (CANDIDATE, BASELINE) if m in overall]
    header = ["metric", *columns] + (["candidate - baseline"] if len(columns) == 2 else [])
    rows = []
    for metric in OVERALL_METRICS:
        values = [overall[m].get(metric) for m in columns]
        if all(v is None for v in values):
            continue
        diff = (
            [values[0] - values[1]]
            if len(values) == 2 and None not in values
            else ([None] if len(columns) == 2 else [])
        )
        rows.append([metric, *values, *diff])
    parts.append("<h3>Overall: candidate vs baseline</h3>" + h.table(header, rows, css_id=f"overall-{h.slug(name)}"))
    figures = [hour_figure({m: models[m] for m in columns})]
    if plots:
        figures.append(calibration_figure({m: plots[m] for m in columns if m in plots}))
        for model in columns:
            if "confusion_matrix" in plots.get(model, {}):
                figures.append(confusion_figure(plots[model]["confusion_matrix"], f"{model} confusion matrix"))
    parts.append('<h3>Slices, calibration, confusion matrix</h3><div class="figs">' + "".join(figures) + "</div>")
    companies = company_rows(models)
    if companies:
        parts.append(
            '<div class="figs">'
            + company_figure(companies, BASELINE in models)
            + day_month_figure(candidate)
            + "</div>"
        )
        parts.append(h.table(["company", "trips", "AUC (candidate)", "AUC (baseline)", "accuracy"], companies))
    parts.append("</section>")
    return "".join(parts), facts


def history_figure(rows: list[dict]) -> str:
    fig, ax = h.figure(7.0, 3.2)
    x = list(range(len(rows)))
    ax.plot(x, [float(r["auc_recent"]) for r in rows], marker="o", label="recent", color="#2f6fb3")
    ax.plot(x, [float(r["auc_long"]) for r in rows], marker="s", label="long", color="#c2703d")
    for i, r in enumerate(rows):
        marker = {"recent": "▲ recent", "long": "▼ long"}.get(r["verdict"])
        if marker:
            ax.annotate(
                marker,
                (i, max(float(r["auc_recent"]), float(r["auc_long"]))),
                fontsize=7,
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
            )
    ax.set_xticks(x, [r["window_key"][:6] for r in rows], rotation=45, fontsize=7)
    ax.set_ylabel("AUC on the newest month")
    ax.set_title("Recent vs long window, month by month")
    ax.legend(fontsize=7)
    return h.svg(fig)


def history_section(history_dir: str) -> tuple[str, list[dict]]:
    path = f"{history_dir}/history.csv"
    if not files.exists(path):
        return "", []
    rows = files.read_csv_rows(path)
    body = [
        '<section id="history"><h2>History of verdicts</h2>',
        history_figure(rows),
        h.table(
            ["window", "trips", "AUC recent", "AUC long", "difference", "95% CI low", "95% CI high", "verdict"],
            [
                [
                    r["window_key"],
                    int(r["examples"]),
                    float(r["auc_recent"]),
                    float(r["auc_long"]),
                    float(r["auc_difference"]),
                    float(r["auc_ci_low"]),
                    float(r["auc_ci_high"]),
                    r["verdict"],
                ]
                for r in rows
            ],
            css_id="history-table",
        ),
        "</section>",
    ]
    return "".join(body), rows


def build(layout: RunLayout) -> tuple[str, dict]:
    """The model report's HTML and its headline facts, for either DAG (found from the run's artifacts)."""
    branches = [
        b
        for b in files.subdirs(f"{layout.run_dir}/variants")
        if files.exists(f"{layout.evaluation_dir(b)}/blessing.json")
    ]
    facts: dict = {"models": {}}
    sections = []
    for branch in branches:
        html, branch_facts = model_section(branch, layout.evaluation_dir(branch))
        sections.append(html)
        facts["models"][branch] = branch_facts

    body = []
    comparison = files.read_json_or_none(f"{layout.run_dir}/comparison.json")
    windows = files.read_json_or_none(f"{layout.window_comparison_dir}/comparison.json")
    if comparison is not None:
        blessed = [r for r in comparison if r["blessed"]]
        best = max(blessed, key=lambda r: r["auc"]) if blessed else None
        facts["champion"] = best["variant"] if best else None
        body.append(
            h.verdict(
                f"CHAMPION: {best['variant']} (AUC {best['auc']:.4f})"
                if best
                else "NO VARIANT BLESSED: serving unchanged",
                "ok" if best else "bad",
            )
        )
        body.append(
            "<h2>Variants side by side</h2>"
            + h.table(
                ["variant", "train rows", "eval rows", "AUC", "accuracy", "majority-class rate", "blessed", "why"],
                [
                    [
                        r["variant"],
                        r["train_rows"],
                        r["eval_rows"],
                        r["auc"],
                        r["accuracy"],
                        r["majority_class_rate"],
                        r["blessed"],
                        r["why"],
                    ]
                    for r in comparison
                ],
                css_id="variants",
            )
        )
    if windows is not None:
        facts["window_verdict"] = windows["verdict"]
        body.append(h.verdict(f"VERDICT: {windows['verdict']}", "neutral"))
        body.append(f"<p>{h.esc(windows['sentence'])}</p>")
        auc = windows["auc"]
        body.append(
            h.headline(
                [
                    ("AUC recent", auc["recent"]),
                    ("AUC long", auc["long"]),
                    ("difference", auc["difference"]),
                    ("trips", windows["examples"]),
                ]
            )
        )
        history, rows = history_section(layout.history_dir)
        facts["history_rows"] = len(rows)
        body.append(history)
        slices = [s for s in windows["slices"] if s["slice"] != "overall"][:15]
        if slices:
            body.append(
                "<h3>Largest slices: recent vs long</h3>"
                + h.table(
                    ["slice", "trips", "AUC recent", "AUC long", "difference"],
                    [
                        [s["slice"], s["example_count"], s["recent_auc"], s["long_auc"], s["auc_difference"]]
                        for s in slices
                    ],
                )
            )
    if not branches:
        body.append(h.verdict("NO MODEL WAS EVALUATED IN THIS RUN", "bad"))
    title = f"Model report: {layout.dag_id}"
    subtitle = f"window {layout.window} · run {layout.run_id}"
    return h.page(title, subtitle, body + sections), facts


def build_history(history_dir: str, dag_id: str) -> str:
    html, rows = history_section(history_dir)
    return h.page(f"Verdict history: {dag_id}", f"{len(rows)} windows", [html or "<p>no verdict recorded yet.</p>"])
