"""The data report of a run: what was extracted and whether it may be trained on."""

from __future__ import annotations

import math

from taxi_pipeline import files
from taxi_pipeline.layout import SPLITS, RunLayout
from taxi_pipeline.queries import WINDOW_COLUMNS
from taxi_pipeline.reports import html as h
from taxi_pipeline.run_context import WindowPlan

CATEGORICAL = ("payment_type", "company")
IGNORED = ("unique_key",)
# The features whose drift people look at first: the validation's drift checks and the hour.
DRIFT_FEATURES = ("fare", "trip_miles", "trip_seconds", "trip_start_hour")


def _label(name: str) -> str:
    return name or "window"


def feature_summary(frame) -> tuple[list[list], list[list]]:
    """(numeric rows, categorical rows) of per-feature summaries of a window's trips."""
    import pandas as pd

    numeric, categorical = [], []
    n = len(frame)
    for column in WINDOW_COLUMNS:
        if column in IGNORED or column not in frame:
            continue
        values = frame[column]
        missing = int(values.isna().sum())
        if column in CATEGORICAL:
            present = values.dropna()
            top = present.value_counts()
            categorical.append(
                [
                    column,
                    n - missing,
                    missing,
                    f"{missing / n:.1%}" if n else "–",
                    int(present.nunique()),
                    top.index[0] if len(top) else None,
                    top.iloc[0] / len(present) if len(top) else float("nan"),
                ]
            )
            continue
        numbers = pd.to_numeric(values, errors="coerce").dropna()
        numeric.append(
            [
                column,
                n - missing,
                missing,
                f"{missing / n:.1%}" if n else "–",
                *(
                    float(f(numbers)) if len(numbers) else float("nan")
                    for f in (pd.Series.mean, pd.Series.std, pd.Series.min, pd.Series.median, pd.Series.max)
                ),
            ]
        )
    return numeric, categorical


def kl_divergence(current, reference, bins: int = 10) -> float:
    """KL(current || reference) over the reference's quantile bins (as the validation measures it)."""
    import numpy as np

    ref = reference.dropna().to_numpy(dtype=float)
    cur = current.dropna().to_numpy(dtype=float)
    if len(ref) < bins or not len(cur):
        return float("nan")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    p = np.histogram(cur, edges)[0] / len(cur) + 1e-6
    q = np.histogram(ref, edges)[0] / len(ref) + 1e-6
    return float(np.sum(p * np.log(p / q)))


def drift_figure(column: str, current, reference, current_name: str, reference_name: str) -> str:
    import numpy as np

    cur = current.dropna().to_numpy(dtype=float)
    ref = reference.dropna().to_numpy(dtype=float)
    both = np.concatenate([cur, ref])
    hi = float(np.quantile(both, 0.99)) if len(both) else 1.0
    lo = float(both.min()) if len(both) else 0.0
    bins = np.arange(-0.5, 24.5, 1.0) if column == "trip_start_hour" else np.linspace(lo, max(hi, lo + 1e-9), 31)
    fig, ax = h.figure(4.6, 2.9)
    ax.hist(
        np.clip(ref, bins[0], bins[-1]),
        bins=bins,
        density=True,
        alpha=0.5,
        color="#7f8c9a",
        label=f"{reference_name} ({len(ref):,})",
    )
    ax.hist(
        np.clip(cur, bins[0], bins[-1]),
        bins=bins,
        density=True,
        alpha=0.55,
        color="#2f6fb3",
        label=f"{current_name} ({len(cur):,})",
    )
    ax.set_title(column)
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return h.svg(fig)


def missing_figure(frame) -> str:
    shares = {c: float(frame[c].isna().mean()) for c in WINDOW_COLUMNS if c in frame and c not in IGNORED}
    fig, ax = h.figure(6.4, 3.4)
    names = list(shares)
    ax.barh(names, [100 * shares[n] for n in names], color="#c2703d")
    ax.invert_yaxis()
    ax.set_xlabel("% missing")
    ax.tick_params(axis="y", labelsize=7)
    return h.svg(fig)


TOP_VALUES = 12  # categorical values shown by name; the rest are summed


def categorical_rows(current: dict, reference: dict | None, domain: list | None) -> list[list]:
    """Rows of a categorical column's values: share in the window, in the reference, in the schema."""
    from taxi_pipeline.trip_statistics import value_shares

    now, before = value_shares(current), value_shares(reference) if reference else {}
    values = sorted(set(now) | set(before), key=lambda v: (-now.get(v, 0.0), -before.get(v, 0.0), v))
    known = set(domain) if domain is not None else None

    def in_schema(value):  # NEW: a value of this window the schema does not know
        return "–" if known is None or value not in now else ("yes" if value in known else "NEW")

    rows = [
        [value, f"{now.get(value, 0.0):.1%}", f"{before.get(value, 0.0):.1%}" if reference else "–", in_schema(value)]
        for value in values[:TOP_VALUES]
    ]
    if len(values) > TOP_VALUES:
        rest = values[TOP_VALUES:]
        unknown = sum(1 for v in rest if in_schema(v) == "NEW")
        rows.append(
            [
                f"{len(rest)} other values",
                f"{sum(now.get(v, 0.0) for v in rest):.1%}",
                f"{sum(before.get(v, 0.0) for v in rest):.1%}" if reference else "–",
                f"{unknown} new" if known is not None else "–",
            ]
        )
    return rows


def schema_section(layout: RunLayout, key: str, reference_name: str | None) -> list[str]:
    """The window's categorical values and label beside the reference's, and the schema it was checked against."""
    from taxi_pipeline.schema import parse

    statistics = files.read_json_or_none(f"{layout.validation_dir(key)}/statistics.json")
    schema_path = f"{layout.validation_dir(key)}/schema.yaml"
    if statistics is None or not files.exists(schema_path):
        return []
    schema = parse(files.read_text(schema_path))
    window, reference = statistics["window"]["all"], statistics.get("reference")
    made = schema.get("made", {})
    body = [
        f"<h2>Against the schema (version {h.esc(schema.get('version'))})</h2>",
        f"<p>Schema {h.esc(made.get('how', ''))} {h.esc(made.get('at', ''))}"
        + (f": {h.esc(made['reason'])}" if made.get("reason") else "")
        + f". Its versions are under <code>{h.esc(layout.schema_dir)}/</code>.</p>",
    ]
    label, label_ref = window.get("label"), (reference or {}).get("label")
    if label and label["base_rate"] is not None:
        body.append(
            h.table(
                ["label", f"base rate ({_label(key)})", f"base rate ({reference_name or 'reference'})"],
                [
                    [
                        label["name"],
                        f"{label['base_rate']:.1%}",
                        f"{label_ref['base_rate']:.1%}" if label_ref and label_ref["base_rate"] is not None else "–",
                    ]
                ],
                css_id="label",
            )
        )
    for column, feature in schema["features"].items():
        if "domain" not in feature or column not in window["features"]:
            continue
        body.append(f"<h3>{h.esc(column)}</h3>")
        body.append(
            h.table(
                ["value", f"share ({_label(key)})", f"share ({reference_name or 'reference'})", "in the schema"],
                categorical_rows(
                    window["features"][column], (reference or {}).get("features", {}).get(column), feature["domain"]
                ),
                left=1,
                css_id=f"values-{column}",
            )
        )
    return body


def build(layout: RunLayout, plan: WindowPlan) -> tuple[str, dict]:
    """The data report's HTML and its headline facts."""
    import pandas as pd

    splits = {
        name: {s: files.read_split(layout.split_dir(s, name)) for s in SPLITS}
        for name in plan.windows
        if files.exists(layout.window_data_dir(name))
    }
    validations = {name: files.read_json_or_none(f"{layout.validation_dir(name)}/report.json") for name in plan.checks}
    done = [v for v in validations.values() if v is not None]
    passed = bool(done) and len(done) == len(validations) and all(v["success"] for v in done)
    problems = sum(len(v["failures"]) for v in done)
    if not done:
        verdict_text, kind = "VALIDATION DID NOT RUN", "neutral"
    elif passed:
        verdict_text, kind = "VALIDATION PASSED", "ok"
    else:
        verdict_text, kind = f"VALIDATION FAILED ({problems} problems)", "bad"

    key = plan.key
    frame = pd.concat(
        [f for f in splits.get(key, {}).values() if len(f.columns)] or [pd.DataFrame()], ignore_index=True
    )
    rows = {s: len(splits.get(key, {}).get(s, [])) for s in SPLITS}
    facts = {"verdict": verdict_text, "passed": passed, "rows": rows, "problems": problems}

    body = [
        h.verdict(verdict_text, kind),
        h.headline([(f"{s} rows", rows[s]) for s in SPLITS] + [("problems", problems)]),
    ]
    for name, report in validations.items():
        if report is None:
            continue
        items = "".join(f"<li>{h.esc(f)}</li>" for f in report["failures"])
        items += "".join(f"<li><i>note:</i> {h.esc(n)}</li>" for n in report["notes"])
        body.append(
            f"<h3>Validation of the {h.esc(_label(name))} {h.esc(report['window'])}: "
            f"{'passed' if report['success'] else 'FAILED'}</h3>"
            + (f'<ul class="reasons">{items}</ul>' if items else "<p>every check passed.</p>")
        )
    body.append(
        "<p>The full validation (every expectation) is in the run's <code>validation/</code> folder "
        "(<code>summary.txt</code>, great-expectations Data Docs).</p>"
    )

    body.append("<h2>Rows per split</h2>")
    body.append(
        h.table(
            ["window", "range", *SPLITS, "total"],
            [
                [
                    _label(name),
                    str(plan.windows[name]),
                    *(len(parts[s]) for s in SPLITS),
                    sum(len(parts[s]) for s in SPLITS),
                ]
                for name, parts in splits.items()
            ],
            left=2,
            css_id="rows",
        )
    )

    if len(frame):
        numeric, categorical = feature_summary(frame)
        body.append(f"<h2>Features of the {h.esc(_label(key))} (train + eval, {len(frame):,} trips)</h2>")
        body.append(
            h.table(
                ["feature", "present", "missing", "missing share", "mean", "std", "min", "median", "max"],
                numeric,
                css_id="numeric",
            )
        )
        body.append(
            h.table(
                ["feature", "present", "missing", "missing share", "distinct", "most frequent", "its share"],
                [[*r[:-1], f"{r[-1]:.1%}"] for r in categorical],
                left=1,
                css_id="categorical",
            )
        )
        body.append("<h2>Missing values</h2>" + missing_figure(frame))
    body += schema_section(layout, key, plan.checks.get(key))

    reference = plan.checks.get(key)
    if reference and reference in splits and len(frame):
        ref = splits[reference]["train"]
        if len(ref.columns):
            body.append(f"<h2>Drift against the {h.esc(reference)} window {h.esc(plan.windows[reference])}</h2>")
            rows_kl = []
            figures = []
            for column in DRIFT_FEATURES:
                if column in frame and column in ref:
                    current = pd.to_numeric(frame[column], errors="coerce")
                    previous = pd.to_numeric(ref[column], errors="coerce")
                    rows_kl.append([column, current.mean(), previous.mean(), kl_divergence(current, previous)])
                    figures.append(drift_figure(column, current, previous, _label(key), reference))
            body.append(
                h.table(
                    ["feature", f"mean ({_label(key)})", f"mean ({reference})", "KL divergence"],
                    rows_kl,
                    css_id="drift",
                )
            )
            body.append('<div class="figs">' + "".join(figures) + "</div>")
            facts["drift"] = {r[0]: r[3] for r in rows_kl if not math.isnan(r[3])}

    title = f"Data report: {layout.dag_id}"
    subtitle = f"window {plan.windows[key]} · run {layout.run_id}"
    return h.page(title, subtitle, body), facts
