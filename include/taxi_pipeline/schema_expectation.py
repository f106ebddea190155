"""The schema check as a great-expectations expectation, so that its anomalies are in the window's
validation result and its Data Docs beside the fixed expectations.

GX only hosts it: the metric computes the window's statistics (taxi_pipeline.trip_statistics) and
its anomalies (taxi_pipeline.anomalies), the one implementation (plain functions of statistics,
for any two sets of trips). The
batch carries a `_split` column naming each row's split, for the train/eval skew.

Importing this module registers the expectation and its metric with GX.
"""

from __future__ import annotations

from typing import Any, ClassVar

from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import BatchExpectation
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider
from great_expectations.render import LegacyRendererType, RenderedStringTemplateContent
from great_expectations.render.renderer.renderer import renderer

from taxi_pipeline.anomalies import validate_statistics
from taxi_pipeline.trip_statistics import SPLIT_COLUMN, generate_statistics

METRIC = "taxi.window_schema_findings"


def window_findings(frame, schema: dict, reference: dict | None, reference_name: str) -> dict:
    """The statistics of a batch of trips (split by its `_split` column) and their findings, as JSON."""
    splits = {name: part.drop(columns=[SPLIT_COLUMN]) for name, part in frame.groupby(SPLIT_COLUMN, sort=True)}
    statistics = generate_statistics(splits or {"all": frame.drop(columns=[SPLIT_COLUMN], errors="ignore")})
    findings = validate_statistics(statistics, schema, reference, reference_name)
    return {
        "statistics": statistics,
        "anomalies": [
            {"column": a.column, "kind": a.kind, "line": a.line, "comparator": a.comparator} for a in findings.anomalies
        ],
        "notes": findings.notes,
        "exceeded": [
            [column, comparator, value] for (column, comparator), value in sorted(findings.exceeded().items())
        ],
    }


class WindowSchemaFindings(TableMetricProvider):
    metric_name = METRIC
    value_keys = ("window_schema", "reference", "reference_name")

    @metric_value(engine=PandasExecutionEngine)
    def _pandas(cls, execution_engine, metric_domain_kwargs, metric_value_kwargs, metrics, runtime_configuration):
        frame, _, _ = execution_engine.get_compute_domain(
            domain_kwargs=metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE
        )
        return window_findings(
            frame,
            metric_value_kwargs["window_schema"],
            metric_value_kwargs["reference"],
            metric_value_kwargs["reference_name"],
        )


class ExpectWindowToMatchItsSchema(BatchExpectation):
    """The window's types, presence, ranges and domains match the schema; it has not drifted from
    the reference window, and its train and eval splits do not differ (taxi_pipeline.anomalies)."""

    schema_version: int
    window_schema: dict
    reference: dict | None = None
    reference_name: str = "the previous window"

    library_metadata: ClassVar[dict] = {
        "maturity": "experimental",
        "tags": ["taxi-mlops"],
        "contributors": [],
        "requirements": [],
        "has_full_test_suite": False,
        "manually_reviewed_code": True,
    }
    metric_dependencies = (METRIC,)
    success_keys = ("window_schema", "reference", "reference_name")
    args_keys = ("schema_version",)

    @classmethod
    @renderer(renderer_type=LegacyRendererType.PRESCRIPTIVE)
    def _prescriptive_renderer(cls, configuration=None, result=None, runtime_configuration=None, **kwargs):
        kw = configuration.kwargs if configuration else {}
        drift = " and must not have drifted from $reference_name" if kw.get("reference") else ""
        return [
            RenderedStringTemplateContent(
                content_block_type="string_template",
                string_template={
                    "template": "Must match schema version $schema_version "
                    "(types, presence, ranges, categorical domains)"
                    + drift
                    + "; its train and eval splits must not differ (skew).",
                    "params": {"schema_version": kw.get("schema_version"), "reference_name": kw.get("reference_name")},
                    "styling": (runtime_configuration or {}).get("styling"),
                },
            )
        ]

    def _validate(self, metrics: dict, runtime_configuration: dict | None = None, execution_engine: Any = None) -> dict:
        findings = metrics[METRIC]
        lines = [a["line"] for a in findings["anomalies"]]
        return {"success": not lines, "result": {"observed_value": lines or "no anomaly", "details": findings}}
