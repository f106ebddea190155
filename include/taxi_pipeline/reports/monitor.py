"""The serving monitor's report of a day, monitor.html: what the served model saw against its training.

The verdict and the thresholds the day crossed; each feature's distance from the training window
beside the schema's threshold; the values the training window never saw; the served probabilities
against the eval split's; and the history of every monitored day (taxi_pipeline.monitor).
"""

from __future__ import annotations

from taxi_pipeline.monitor import HISTORY_KEY, MonitorResult
from taxi_pipeline.reports import html as h

SERVED, EVAL = "#2f6fb3", "#7f8c9a"  # the colors of the data report's overlays: served as current, eval as reference
ALERT = "#c0392b"


def _crossed_section(result: MonitorResult) -> str:
    if result.crossed:
        items = "".join(f"<li>{h.esc(line)}</li>" for line in result.crossed)
        body = f'<ul class="reasons" id="crossed-list">{items}</ul>'
    else:
        body = "<p>no threshold crossed.</p>"
    notes = "".join(f"<li><i>note:</i> {h.esc(n)}</li>" for n in result.notes)
    return (
        '<section id="crossed"><h2>Thresholds crossed</h2>'
        + body
        + (f'<ul class="reasons" id="notes">{notes}</ul>' if notes else "")
        + "</section>"
    )


def _features_section(result: MonitorResult) -> str:
    rows = [
        [f.column, f.measure or "–", f.distance, f.threshold, f.null_change, f.null_threshold, f.status]
        for f in result.features
    ]
    return (
        '<section id="features"><h2>Features against the training window</h2>'
        "<p>Categorical columns: the L-infinity distance of value shares; numeric columns: the Jensen-Shannon "
        "divergence over the training window's deciles; the label: the change of its base rate. The thresholds "
        "are the schema's skew thresholds; a distance counts only beyond sampling noise too.</p>"
        + h.table(
            ["feature", "measure", "distance", "threshold", "null share change", "its threshold", "verdict"],
            rows,
            left=2,
            css_id="distances",
        )
        + "</section>"
    )


def _unseen_section(result: MonitorResult) -> str:
    rows = [[column, value, f"{share:.1%}"] for column, values in result.unseen.items() for value, share in values]
    body = (
        h.table(["feature", "value", "share of the day's values"], rows, left=2, css_id="unseen-values")
        if rows
        else "<p>none: every categorical value of the day is in the schema's domain.</p>"
    )
    return '<section id="unseen"><h2>Values the training window never saw</h2>' + body + "</section>"


def prediction_figure(result: MonitorResult) -> str:
    import numpy as np

    drift = result.prediction
    edges = np.asarray(drift.edges)
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, ax = h.figure(5.4, 3.2)
    ax.bar(centers - width / 5, drift.reference_shares, width=width * 0.4, color=EVAL, label="eval split")
    ax.bar(centers + width / 5, drift.shares, width=width * 0.4, color=SERVED, label=f"served ({drift.count:,})")
    ax.set_xlabel("predicted probability of a big tip")
    ax.set_ylabel("share of trips")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_title("Served predictions vs the eval split")
    ax.legend(fontsize=7)
    return h.svg(fig)


def _prediction_section(result: MonitorResult) -> str:
    drift = result.prediction
    last = len(drift.shares) - 1
    bins = [
        [f"[{lo:.1f}, {hi:.1f}{']' if i == last else ')'}", served, reference]
        for i, (lo, hi, served, reference) in enumerate(
            zip(drift.edges[:-1], drift.edges[1:], drift.shares, drift.reference_shares, strict=True)
        )
    ]
    return (
        '<section id="predictions"><h2>Predictions against the eval split</h2>'
        + h.headline(
            [
                ("Jensen-Shannon divergence", drift.js),
                ("threshold", result.thresholds.prediction_js),
                ("mean probability (served)", drift.mean),
                ("mean probability (eval)", drift.reference_mean),
            ]
        )
        + '<div class="figs">'
        + (prediction_figure(result) if drift.count else "<p>no predictions.</p>")
        + "</div>"
        + h.table(["probability", "share (served)", "share (eval)"], bins, css_id="prediction-bins")
        + "</section>"
    )


def _series(rows: list[dict], key: str) -> list[float]:
    return [float("nan") if row.get(key) is None or row.get(key) == "" else float(row[key]) for row in rows]


def _lines_figure(rows: list[dict], keys: dict[str, str], title: str, ylabel: str, bar: float | None = None) -> str:
    """A line per key (label -> history key) across the days; the days that alerted marked; `bar` a threshold."""
    import matplotlib

    fig, ax = h.figure(7.0, 3.2)
    ax.set_prop_cycle(color=matplotlib.colormaps["tab20"].colors)  # a color per numeric feature (there are 12)
    x = list(range(len(rows)))
    for label, key in keys.items():
        ax.plot(x, _series(rows, key), marker="o", ms=3, lw=1.2, label=label)
    if bar is not None:
        ax.axhline(bar, ls="--", lw=1, color=ALERT, label=f"threshold {bar:g}")
    for i, row in enumerate(rows):
        if row.get("verdict") == "alert":
            ax.axvline(i, color=ALERT, alpha=0.15, lw=6)
    ax.set_xticks(x, [str(row[HISTORY_KEY]) for row in rows], rotation=45, fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2)
    return h.svg(fig)


def _one_threshold(result: MonitorResult, measure: str) -> float | None:
    """The threshold of a kind of distance, when every column of that kind has the same one."""
    bars = {f.threshold for f in result.features if f.measure == measure and f.threshold is not None}
    return bars.pop() if len(bars) == 1 else None


def _history_section(result: MonitorResult, rows: list[dict]) -> str:
    if not rows:
        return '<section id="history"><h2>History</h2><p>no monitored day recorded yet.</p></section>'
    present = {key for row in rows for key, value in row.items() if value is not None}
    figures = [
        _lines_figure(
            rows, {"realized AUC": "realized_auc", "eval AUC": "eval_auc"}, "Realized AUC against the eval AUC", "AUC"
        ),
        _lines_figure(
            rows,
            {"served vs eval": "prediction_js"},
            "Drift of the served predictions",
            "Jensen-Shannon divergence",
            result.thresholds.prediction_js,
        ),
    ]
    for measure, prefix, title in (
        ("Jensen-Shannon", "js_", "Numeric features against the training window"),
        ("L-infinity", "linf_", "Categorical features against the training window"),
        ("base rate change", "base_rate_", "The label's base rate against the training window"),
    ):
        keys = {key.removeprefix(prefix): key for key in sorted(present) if key.startswith(prefix)}
        if keys:
            figures.append(_lines_figure(rows, keys, title, measure, _one_threshold(result, measure)))
    table = h.table(
        ["day", "model version", "trips", "scored", "realized AUC", "eval AUC", "prediction JS", "verdict", "crossed"],
        [
            [
                row[HISTORY_KEY],
                row.get("model_version"),
                row.get("rows"),
                row.get("scored"),
                row.get("realized_auc"),
                row.get("eval_auc"),
                row.get("prediction_js"),
                row.get("verdict"),
                row.get("reasons") or "",
            ]
            for row in rows
        ],
        left=2,
        css_id="history-table",
    )
    return (
        f'<section id="history"><h2>History ({len(rows)} days)</h2><div class="figs">'
        + "".join(figures)
        + "</div>"
        + table
        + "</section>"
    )


def build(result: MonitorResult, history_rows: list[dict], title: str = "Serving monitor") -> str:
    """The monitor's HTML page of a day (`result`), with the history of every monitored day
    (monitor.read_history, the day's own row included)."""
    verdict = (
        h.verdict(f"ALERT: {len(result.crossed)} thresholds crossed", "bad")
        if result.alert
        else h.verdict("OK: no threshold crossed", "ok")
    )
    quality = result.quality
    body = [
        verdict,
        h.headline(
            [
                ("day", result.day),
                ("trips", result.rows),
                ("scored", result.scored),
                ("model version", result.model_version or "–"),
                ("realized AUC", quality.auc if quality else None),
                ("eval AUC", result.eval_auc),
                ("AUC change", result.auc_change),
                ("realized accuracy", quality.accuracy if quality else None),
            ]
        ),
        _crossed_section(result),
        _features_section(result),
        _unseen_section(result),
        _prediction_section(result),
        _history_section(result, history_rows),
    ]
    subtitle = f"day {result.day} · model version {result.model_version or '–'} · {result.rows:,} trips"
    return h.page(f"{title}: {result.day}", subtitle, body)
