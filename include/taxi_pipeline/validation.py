"""Data validation of a window: the gate before any model is built.

Two layers, one verdict:
- the data's schema (taxi_pipeline.schema, learned from the data and versioned): the window's
  statistics (taxi_pipeline.trip_statistics) against the schema's types, presence, ranges and
  categorical domains, drift against the previous window and skew between the window's splits,
  the label's base rate included (taxi_pipeline.anomalies);
- fixed expectations with great-expectations, the contract no schema change may relax (below).

The expectations are derived from what the sample really is (observed over 25,001 trips,
2013-2016) with a margin, so that a real window passes and a broken one fails:
- every column the window query returns is present and numeric where the table is numeric;
- fares, tips, miles and durations are non-negative (observed maxima: fare 700, 20 h trips);
- coordinates sit inside a Chicago box (observed lat 41.66-42.02, lon -87.91 to -87.54);
- null fractions stay near what is normal (company is missing on 34% of trips, dropoff on 4%);
- unique_key is unique; hour/day/month are in range; trips lie inside the window;
- at least `min_rows` trips;
- drift: the KL divergence of each key numeric feature against the previous window of the same
  length stays under a bar (observed year-on-year: fare and duration <= 0.013, miles <= 0.11).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from taxi_pipeline.anomalies import DRIFT_BINS
from taxi_pipeline.files import read_split
from taxi_pipeline.layout import SPLITS
from taxi_pipeline.queries import WINDOW_COLUMNS
from taxi_pipeline.schema import SchemaStore, accept, infer_schema, made, parse
from taxi_pipeline.trip_statistics import SPLIT_COLUMN, dataset_statistics
from taxi_pipeline.window import Window

NUMERIC_COLUMNS = tuple(c for c in WINDOW_COLUMNS if c not in ("unique_key", "payment_type", "company"))
NON_NEGATIVE = {"fare": 1000.0, "tips": None, "trip_miles": None, "trip_seconds": 86_400.0}
CHICAGO_BOX = {
    "pickup_latitude": (41.6, 42.1),
    "dropoff_latitude": (41.6, 42.1),
    "pickup_longitude": (-88.0, -87.5),
    "dropoff_longitude": (-88.0, -87.5),
}
CALENDAR_RANGES = {"trip_start_hour": (0, 23), "trip_start_day": (1, 7), "trip_start_month": (1, 12)}
# The largest share of nulls each column may have; unlisted columns may not be null at all.
MAX_NULL_FRACTION = {
    "company": 0.5,
    "dropoff_census_tract": 0.6,
    "pickup_census_tract": 1.0,
    "dropoff_latitude": 0.15,
    "dropoff_longitude": 0.15,
    "dropoff_community_area": 0.15,
    "pickup_community_area": 0.05,
    "trip_seconds": 0.01,
    "trip_miles": 0.01,
    "fare": 0.01,
    "tips": 0.01,
    "payment_type": 0.01,
}
DRIFT_KL_MAX = {"fare": 0.1, "trip_seconds": 0.1, "trip_miles": 0.3}
log = logging.getLogger(__name__)
# great-expectations logs its API registry at INFO on import ("Skipping registering function ...",
# ~200 lines a run); its warnings and errors still show.
logging.getLogger("great_expectations").setLevel(logging.WARNING)
NUMERIC_TYPES = ["int", "int64", "Int64", "float", "float64", "Float64"]


@dataclass
class ValidationReport:
    window: str
    success: bool
    rows: dict[str, int]
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema_version: int | None = None
    # The failures that are schema anomalies (a person may accept them as a change of the data);
    # the others broke the fixed expectations.
    anomalies: list[str] = field(default_factory=list)
    exceeded: list[list] = field(default_factory=list)  # [column, comparator, distance] past a threshold

    def summary(self) -> str:
        verdict = "PASSED" if self.success else f"FAILED ({len(self.failures)} problems)"
        lines = [
            f"Validation of window {self.window} against schema v{self.schema_version}: {verdict}; rows {self.rows}"
        ]
        lines += [f"  - {f}" for f in self.failures] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def drift_partition(reference, bins: int = DRIFT_BINS) -> dict | None:
    """A GX partition object of the reference values: quantile bins and their weights."""
    import numpy as np

    values = reference.dropna().to_numpy(dtype=float)
    if len(values) < bins * 10:
        return None
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    weights = np.histogram(values, edges)[0] / len(values)
    return {"bins": edges.tolist(), "weights": weights.tolist()}


def build_expectations(
    window: Window, min_rows: int, reference=None, reference_name: str = "the reference window"
) -> tuple[list, list[str]]:
    import great_expectations.expectations as gxe

    notes: list[str] = []
    exps = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(WINDOW_COLUMNS), exact_match=False),
        gxe.ExpectTableRowCountToBeBetween(min_value=min_rows),
        gxe.ExpectColumnValuesToBeUnique(column="unique_key"),
    ]
    exps += [gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=NUMERIC_TYPES) for c in NUMERIC_COLUMNS]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=hi) for c, hi in NON_NEGATIVE.items()]
    exps += [
        gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi) for c, (lo, hi) in CHICAGO_BOX.items()
    ]
    exps += [
        gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi)
        for c, (lo, hi) in CALENDAR_RANGES.items()
    ]
    exps.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="trip_start_timestamp",
            min_value=window.start.timestamp(),
            max_value=window.end.timestamp(),
            strict_max=True,
        )
    )
    for column in WINDOW_COLUMNS:
        max_null = MAX_NULL_FRACTION.get(column, 0.0)
        if max_null < 1.0:
            exps.append(gxe.ExpectColumnProportionOfNonNullValuesToBeBetween(column=column, min_value=1 - max_null))
    if reference is None:
        notes.append("no reference window for this window: drift not checked")
    elif reference.empty:
        notes.append(f"no trips in {reference_name}: drift not checked")
    else:
        for column, kl_max in DRIFT_KL_MAX.items():
            partition = drift_partition(reference[column]) if column in reference else None
            if partition is None:
                notes.append(f"{column}: too few reference values for a drift check")
                continue
            exps.append(
                gxe.ExpectColumnKLDivergenceToBeLessThan(
                    column=column,
                    partition_object=partition,
                    threshold=kl_max,
                    internal_weight_holdout=0.01,
                    tail_weight_holdout=0.01,
                )
            )
    return exps, notes


def _raised_exception(info) -> str | None:
    """The first exception message in GX's exception_info (flat, or keyed by metric)."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return (str(info.get("exception_message") or "error").splitlines() or ["error"])[0][:160]
    return next((m for v in info.values() if (m := _raised_exception(v))), None)


def describe_failure(result) -> str:
    """One readable line for a failed expectation."""
    cfg = result.expectation_config
    kind, kw = cfg.type, {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id", "result_format")}
    column = kw.get("column")
    res = result.result or {}
    raised = _raised_exception(result.exception_info)
    if raised:
        return f"{column or 'table'}: {kind} could not run ({raised})"
    if kind == "expect_table_columns_to_match_set":
        missing = sorted(set(kw["column_set"]) - set(res.get("observed_value", [])))
        return f"missing required columns: {', '.join(missing)}"
    if kind == "expect_table_row_count_to_be_between":
        return f"too few trips: {res.get('observed_value')} rows, at least {kw['min_value']} required"
    if kind == "expect_column_values_to_be_unique":
        return (
            f"{column}: {res.get('unexpected_count')} rows share their value with another row "
            f"(e.g. {res.get('partial_unexpected_list', [])[:2]})"
        )
    if kind == "expect_column_values_to_be_between":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        bounds = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
        return (
            f"{column}: {res.get('unexpected_count')} values ({res.get('unexpected_percent', 0):.1f}%) outside "
            f"{bounds}, e.g. {res.get('partial_unexpected_list', [])[:3]}"
        )
    if kind == "expect_column_proportion_of_non_null_values_to_be_between":
        observed = res.get("observed_value")
        null_share = 1 - observed if isinstance(observed, (int, float)) else observed
        return f"{column}: {null_share:.1%} nulls, at most {1 - kw['min_value']:.0%} allowed"
    if kind == "expect_column_kl_divergence_to_be_less_than":
        observed = res.get("observed_value")
        shown = (
            "inf" if observed is None or (isinstance(observed, float) and math.isinf(observed)) else f"{observed:.3f}"
        )
        return f"{column}: drifted from the previous window (KL divergence {shown} > {kw['threshold']})"
    return f"{column or 'table'}: {kind} failed ({res.get('observed_value')})"


def text_values(values, limit: int = 3) -> list[str]:
    """Examples of the values of a column that are not numbers."""
    import pandas as pd

    present = values.dropna()
    return present[pd.to_numeric(present, errors="coerce").isna()].astype(str).unique()[:limit].tolist()


def summarize_failures(failed: list, frame) -> list[str]:
    """One line per problem. A column that is not numeric is reported once, as such, and its
    range and drift checks (which then fail or cannot run) are not reported again."""
    if frame.empty:  # column checks of an empty window say nothing more than its row count
        return [describe_failure(r) for r in failed if "column" not in r.expectation_config.kwargs]
    missing = set(WINDOW_COLUMNS) - set(frame.columns)
    not_numeric = {
        r.expectation_config.kwargs["column"]
        for r in failed
        if r.expectation_config.type == "expect_column_values_to_be_in_type_list"
    } - missing
    lines = [f"{c}: not numeric, has text values such as {text_values(frame[c])}" for c in sorted(not_numeric)]
    lines += [
        describe_failure(r) for r in failed if r.expectation_config.kwargs.get("column") not in not_numeric | missing
    ]
    return lines


def read_window(data_dir: str) -> tuple:
    """(the window's splits as one frame, the same with each row's split in `_split` (the batch the
    schema expectation reads), the rows of each split)."""
    import pandas as pd

    splits = {s: read_split(f"{data_dir}/{s}") for s in SPLITS}
    present = {s: f for s, f in splits.items() if len(f.columns)}
    # join="inner": a column missing from one split is missing from the window, not a flood of nulls.
    if not present:
        empty = pd.DataFrame({c: [] for c in WINDOW_COLUMNS})
        return empty, empty.assign(**{SPLIT_COLUMN: []}), {s: 0 for s in SPLITS}
    frame = pd.concat(list(present.values()), join="inner", ignore_index=True)
    batch = pd.concat([f.assign(**{SPLIT_COLUMN: s}) for s, f in present.items()], join="inner", ignore_index=True)
    return frame, batch, {s: len(f) for s, f in splits.items()}


def schema_anomalies(findings: list[dict], gx_columns: set[str]) -> list[str]:
    """The schema's anomaly lines, less those a fixed expectation already says for the same column
    (it is missing, has text, nulls, values out of range, or drifted). A domain or a skew line is
    kept: the fixed expectations do not look at those."""
    said = {"missing", "type", "presence", "range", "drift"}
    return [a["line"] for a in findings if not (a["kind"] in said and a["column"] in gx_columns)]


def validate_window(
    data_dir: str,
    window: Window,
    out_dir: str,
    min_rows: int,
    schema_text: str,
    reference_dir: str | None = None,
    reference_name: str = "the reference window",
) -> ValidationReport:
    """Validate the extracted window under `data_dir` (its train/ and eval/ splits) against `schema`
    (the text of a version of taxi_pipeline.schema), measuring drift against the trips under `reference_dir`
    (a split folder) if given; write result.json, summary.txt, data_docs/, statistics.json,
    anomalies.json and schema.yaml to `out_dir`.

    `out_dir` is expected to be a fresh (staging) directory: callers publish it atomically.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from taxi_pipeline.schema_expectation import ExpectWindowToMatchItsSchema

    schema = parse(schema_text)
    frame, batch_frame, rows = read_window(data_dir)
    reference = read_split(reference_dir) if reference_dir else None
    reference_statistics = dataset_statistics(reference) if reference is not None and len(reference.columns) else None
    expectations, notes = build_expectations(window, min_rows, reference, reference_name)
    expectations.append(
        ExpectWindowToMatchItsSchema(
            schema_version=schema.get("version") or 0,
            window_schema=schema,
            reference=reference_statistics,
            reference_name=reference_name,
        )
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        site_name="window",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out / "data_docs")},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    batch = (
        context.data_sources.add_pandas("window")
        .add_dataframe_asset("trips")
        .add_batch_definition_whole_dataframe("window")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="taxi_window", expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="taxi_window", data=batch, suite=suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="taxi_window",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["window"])],
            result_format={"result_format": "SUMMARY"},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": batch_frame})
    (validation,) = result.run_results.values()

    (schema_result,) = [
        r for r in validation.results if r.expectation_config.type == ExpectWindowToMatchItsSchema.expectation_type
    ]
    findings = (schema_result.result or {}).get("details") or {
        "statistics": {},
        "exceeded": [],
        "notes": [],
        "anomalies": [
            {
                "column": "",
                "kind": "error",
                "comparator": "",
                "line": "the schema check could not run "
                f"({_raised_exception(schema_result.exception_info) or 'no result'})",
            }
        ],
    }
    failed = [r for r in validation.results if not r.success and r is not schema_result]
    failures = [f"the {split} split is empty" for split, n in rows.items() if n == 0 and len(frame)]
    failures += summarize_failures(failed, frame)
    gx_columns = {r.expectation_config.kwargs.get("column") for r in failed} | (
        set(WINDOW_COLUMNS) - set(frame.columns)
    )
    anomalies = schema_anomalies(findings["anomalies"], gx_columns) if len(frame) else []
    report = ValidationReport(
        window=str(window),
        success=not (failed or failures or anomalies),
        rows=rows,
        failures=failures + anomalies,
        notes=notes + findings["notes"],
        schema_version=schema.get("version"),
        anomalies=anomalies,
        exceeded=findings["exceeded"],
    )
    report_findings = {"exceeded": findings["exceeded"], "anomalies": findings["anomalies"]}
    (out / "statistics.json").write_text(
        json.dumps({"window": findings["statistics"], "reference": reference_statistics}, indent=1, sort_keys=True)
        + "\n"
    )
    (out / "anomalies.json").write_text(json.dumps(report_findings, indent=1) + "\n")
    (out / "schema.yaml").write_text(schema_text)
    (out / "result.json").write_text(json.dumps(validation.to_json_dict(), indent=1, default=str))
    (out / "report.json").write_text(json.dumps(asdict(report), indent=1))
    (out / "summary.txt").write_text(report.summary() + "\n")
    return report


def pinned_schema(layout, check: str) -> str | None:
    """The schema text a window check's first attempt validated against: a retry uses it again, so
    it gives the first attempt's verdict."""
    from taxi_pipeline import files

    pinned = f"{layout.validation_dir(check)}/schema.yaml"
    return files.read_text(pinned) if files.exists(pinned) else None


def run_schema(layout, plan) -> str:
    """The schema text a run validates against: the DAG's newest version, else version 1 inferred
    now from the train splits of the run's windows; that one is stored (keep_schema) only once the
    windows it was learned from have passed, so a bad first window teaches it nothing."""
    store = SchemaStore(layout.schema_dir, layout.dag_id)
    current = store.current()
    if current:
        return current
    windows = {name or "window": str(window) for name, window in plan.windows.items()}
    train_dirs = [layout.split_dir("train", name) for name in plan.windows]
    return store.next_text(inferred_schema(train_dirs, made("inferred", run=layout.run_id, windows=windows)))


def inferred_schema(train_dirs: list[str], how: dict) -> dict:
    """A first schema, learned from the statistics of the train splits under `train_dirs`."""
    return infer_schema([dataset_statistics(read_split(d)) for d in train_dirs], how)


def keep_schema(layout, schema_text: str) -> None:
    """Store a schema a run validated with, if it is a version the store does not have yet (one
    inferred or accepted by the run); an identical copy already there is fine. Another run may store
    the same version first (a backfill's first windows infer at once): an inferred one then stays
    in this run's validation folder only; an accepted change is refused (FileExistsError)."""
    from taxi_pipeline import files

    store = SchemaStore(layout.schema_dir, layout.dag_id)
    schema = parse(schema_text)
    try:
        store.write(schema_text)
    except FileExistsError:
        if files.read_text(store.path(schema["version"])) == schema_text:
            return
        if schema["made"].get("how") != "inferred":
            raise
        log.warning(
            "Schema version %s was stored by another run meanwhile; this run validated against the one "
            "it inferred (in its validation folder)",
            schema["version"],
        )


def accept_changes(layout, schema_text: str, out_dir: str, report: ValidationReport, reason: str) -> str:
    """The next schema version, taking what a window that failed only on schema anomalies showed
    (read from its validation in `out_dir`), built on the newest stored version (which may be newer
    than the one validated); returns its text, for the run to validate with and keep_schema."""
    if not report.anomalies or len(report.anomalies) != len(report.failures):
        fixed = [f for f in report.failures if f not in report.anomalies]
        raise ValueError(
            "accept_data_changes accepts changes of the data's schema only; these problems break "
            "the fixed expectations and no schema change can accept them: " + "; ".join(fixed)
        )
    statistics = json.loads((Path(out_dir) / "statistics.json").read_text())["window"]["all"]
    exceeded = {(column, comparator): value for column, comparator, value in report.exceeded}
    store = SchemaStore(layout.schema_dir, layout.dag_id)
    base = store.current() or schema_text
    return store.next_text(accept(parse(base), statistics, exceeded, reason, layout.run_id))


class RefusedSchemaChange(Exception):
    """A change of the schema a run cannot make: not a schema anomaly, or another run's version in the way."""


def validate_run(layout, plan, min_rows: int, accept_reason: str = "") -> dict[str, ValidationReport]:
    """Validate each window check of a run's plan into its validation folder (published whole, also
    when it fails), against the run's schema; with `accept_reason`, a window failing only on schema
    anomalies is validated again against the next version that accepts them. The schema versions
    the run inferred or accepted are stored once every window passed."""
    import shutil
    from functools import partial

    from taxi_pipeline.files import atomic_directory

    reports, used = {}, []
    unpinned = None  # the schema of the checks no earlier attempt pinned: one for the whole run
    for name, reference in plan.checks.items():
        schema_text = pinned_schema(layout, name) or unpinned or (unpinned := run_schema(layout, plan))
        with atomic_directory(layout.validation_dir(name)) as staging:
            validate = partial(
                validate_window,
                layout.window_data_dir(name),
                plan.windows[name],
                str(staging),
                min_rows,
                reference_dir=layout.split_dir("train", reference) if reference else None,
                reference_name=f"the {reference} window {plan.windows[reference]}" if reference else "",
            )
            report = validate(schema_text=schema_text)
            if accept_reason and not report.success:
                try:
                    schema_text = unpinned = accept_changes(layout, schema_text, str(staging), report, accept_reason)
                except ValueError as refused:
                    raise RefusedSchemaChange(str(refused)) from None
                log.info(
                    "Accepting the window's changes (%s) as schema version %s; validating again",
                    accept_reason,
                    parse(schema_text)["version"],
                )
                shutil.rmtree(staging)
                staging.mkdir()
                report = validate(schema_text=schema_text)
        reports[name] = report
        used.append(schema_text)
    if all(report.success for report in reports.values()):
        for schema_text in dict.fromkeys(used):
            try:
                keep_schema(layout, schema_text)
            except FileExistsError as taken:
                raise RefusedSchemaChange(str(taken)) from None
    return reports
