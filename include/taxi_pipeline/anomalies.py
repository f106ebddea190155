"""Anomalies of a set of trips: against the schema, against a previous window, between splits.

TFDV's validate_statistics, on the statistics of taxi_pipeline.trip_statistics and the schema of
taxi_pipeline.schema. Each anomaly is one line a person can act on:
- against the schema: a column missing, text in a numeric column, too many nulls, values outside
  the range, values outside the domain (with their share of rows);
- against a reference (drift: the previous window; skew: a window's eval split against its train
  split, or what a served model received against its training window): categorical drift as the
  L-infinity distance of value shares, numeric drift as the Jensen-Shannon divergence over the
  reference's deciles, a jump of a column's null share, a change of the label's base rate.

A share that differs between two sets of trips counts only when it is beyond their sampling noise
too (more than NOISE_Z standard errors): a month of 100 trips differs from the 90 days before it by
chance far more than a year does. A Jensen-Shannon divergence needs MIN_VALUES_FOR_JS values on
each side to mean anything; with fewer it is not judged, and a note says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from taxi_pipeline.schema import threshold
from taxi_pipeline.trip_statistics import value_shares

NOISE_Z = 6.0
MIN_VALUES_FOR_JS = 1000


def share_moves(current: dict, reference: dict) -> list[tuple[float, str]]:
    """How far each categorical value's share of rows moved, largest first: the first is TFDV's
    categorical drift, the L-infinity distance."""
    p, q = value_shares(current), value_shares(reference)
    return sorted(((abs(p.get(v, 0.0) - q.get(v, 0.0)), v) for v in set(p) | set(q)), key=lambda m: (-m[0], m[1]))


def _cdf(quantiles: list[float], x):
    """The share of values <= x, interpolated between a column's percentiles (right-continuous at ties)."""
    import numpy as np

    q = np.asarray(quantiles)
    p = np.linspace(0, 1, len(q))
    k = np.searchsorted(q, x, side="right")
    inside = (k > 0) & (k < len(q))
    lo, hi = np.clip(k - 1, 0, len(q) - 1), np.clip(k, 0, len(q) - 1)
    span = np.where(inside, q[hi] - q[lo], 1.0)
    between = p[lo] + (x - q[lo]) / span * (p[hi] - p[lo])
    return np.where(k == 0, 0.0, np.where(k >= len(q), 1.0, between))


DRIFT_BINS = 10  # the reference's deciles (validation's KL check bins the same way)


def js_divergence(current: dict, reference: dict, bins: int = DRIFT_BINS) -> float:
    """TFDV's numeric drift: the Jensen-Shannon divergence (base 2, so 0 to 1) of two numeric columns'
    distributions over the reference's quantile bins (and a bin each below and above its range),
    each side's mass read off its percentiles."""
    import numpy as np

    if not current.get("quantiles") or not reference.get("quantiles"):
        return math.nan
    ref_q = np.asarray(reference["quantiles"])
    edges = np.unique(ref_q[np.linspace(0, len(ref_q) - 1, bins + 1).round().astype(int)])
    cuts = edges

    def masses(quantiles):
        cdf = np.concatenate([[0.0], _cdf(quantiles, cuts), [1.0]])
        return np.diff(cdf)

    return js_of_masses(masses(current["quantiles"]), masses(reference["quantiles"]))


def js_of_masses(p, q) -> float:
    """The Jensen-Shannon divergence (base 2, 0 to 1) of two distributions over the same bins (empty
    bins left out); the serving monitor's prediction drift uses it on histograms."""
    import numpy as np

    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    m = (p + q) / 2

    def kl(a):
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    return max(0.0, (kl(p) + kl(q)) / 2)


@dataclass(frozen=True)
class Anomaly:
    column: str
    kind: str  # TFDV's anomaly kinds, shortened: missing, type, presence, range, domain, drift, skew
    line: str
    comparator: str = ""  # the schema threshold it exceeded: drift_comparator, skew_comparator, null_rate_jump

    def __str__(self) -> str:
        return self.line


@dataclass
class Findings:
    anomalies: list[Anomaly] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Every distance measured, by (column, comparator): what an accepted change raises thresholds to.
    measured: dict[tuple[str, str], float] = field(default_factory=dict)

    def exceeded(self) -> dict[tuple[str, str], float]:
        """The distances that broke a threshold, by (column, comparator)."""
        keys = {(a.column, a.comparator) for a in self.anomalies if a.comparator}
        return {key: value for key, value in self.measured.items() if key in keys}

    def extend(self, other: Findings) -> None:
        self.anomalies += other.anomalies
        self.notes += other.notes
        self.measured.update(other.measured)


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def check_schema(statistics: dict, schema: dict) -> list[Anomaly]:
    """The anomalies of one set of trips (a dataset_statistics) against the schema."""
    found = []
    n = statistics["num_examples"]
    for column, feature in schema["features"].items():
        stats = statistics["features"].get(column)
        if stats is None:
            found.append(Anomaly(column, "missing", f"{column}: column missing (the schema requires it)"))
            continue
        if stats.get("text_values"):
            found.append(
                Anomaly(
                    column,
                    "type",
                    f"{column}: expected {feature['type']}, {stats['text_values']} "
                    f"values are text (e.g. {stats['text_examples']})",
                )
            )
        present = stats["count"] / n if n else 1.0
        minimum = feature["presence"]["min_fraction"]
        if n and present < minimum and (minimum - present) / math.sqrt(minimum * (1 - minimum) / n or 1e-12) > NOISE_Z:
            found.append(
                Anomaly(
                    column,
                    "presence",
                    f"{column}: {_pct(1 - present)} nulls, the schema allows at most {_pct(1 - minimum)}",
                )
            )
        domain = feature.get("float_domain")
        if domain and "min" in stats and (stats["min"] < domain["min"] or stats["max"] > domain["max"]):
            worst = stats["min"] if stats["min"] < domain["min"] else stats["max"]
            found.append(
                Anomaly(
                    column,
                    "range",
                    f"{column}: values outside the schema's range "
                    f"[{domain['min']:g}, {domain['max']:g}], e.g. {worst:g}",
                )
            )
        if "domain" in feature and stats["count"]:
            known = set(feature["domain"])
            unknown = {v: rows for v, rows in stats["frequencies"].items() if v not in known}
            mass = (sum(unknown.values()) + stats.get("other_rows", 0)) / stats["count"]
            allowed = 1 - feature["distribution_constraints"]["min_domain_mass"]
            if mass > allowed + 1e-12:
                shown = ", ".join(f"{v!r} {_pct(r / stats['count'])}" for v, r in list(unknown.items())[:3])
                more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
                found.append(
                    Anomaly(
                        column,
                        "domain",
                        f"{column}: {_pct(mass)} of values outside the schema's domain "
                        f"(at most {_pct(allowed)} may be): {shown}{more}",
                    )
                )
    return found


def _z(p1: float, n1: int, p2: float, n2: int) -> float:
    """How many standard errors apart two shares are (a two-proportion z statistic)."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n2))
    return abs(p1 - p2) / spread


def compare(current: dict, reference: dict, schema: dict, comparator: str, against: str) -> Findings:
    """Drift or skew (`comparator`: "drift_comparator" or "skew_comparator") of one set of trips
    against a reference set (both dataset_statistics); `against` ends each line, e.g. "against the
    previous window". A column the reference has and the set lacks is an anomaly (a feature the
    clients stopped sending); a column's null share may not jump either way of comparing."""
    findings = Findings()
    kind = "drift" if comparator == "drift_comparator" else "skew"
    n_cur, n_ref = current["num_examples"], reference["num_examples"]
    if not n_cur or not n_ref:
        findings.notes.append(f"{kind} not measured {against}: a side has no trips")
        return findings
    too_few = []
    for column, feature in schema["features"].items():
        cur, ref = current["features"].get(column), reference["features"].get(column)
        if ref is None:
            continue
        if cur is None:
            findings.anomalies.append(Anomaly(column, "missing", f"{column}: column missing {against}"))
            continue
        limit = threshold(feature, comparator)
        if limit is not None and "frequencies" in cur:
            moves = share_moves(cur, ref)
            findings.measured[(column, comparator)] = moves[0][0] if moves else 0.0
            now, was = value_shares(cur), value_shares(ref)
            beyond = [
                (d, v)
                for d, v in moves
                if d > limit
                and cur["count"]
                and ref["count"]
                and _z(now.get(v, 0.0), cur["count"], was.get(v, 0.0), ref["count"]) > NOISE_Z
            ]
            if beyond:
                distance, value = beyond[0]
                findings.anomalies.append(
                    Anomaly(
                        column,
                        kind,
                        (
                            f"{column}: {kind} {against} (L-infinity distance {distance:.3f} > {limit}): {value!r} "
                            f"{_pct(was.get(value, 0.0))} -> {_pct(now.get(value, 0.0))} of rows"
                        ),
                        comparator,
                    )
                )
        elif limit is not None and cur.get("quantiles") and ref.get("quantiles"):
            if min(cur["count"], ref["count"]) < MIN_VALUES_FOR_JS:
                too_few.append(f"{column} ({cur['count']} and {ref['count']})")
            else:
                divergence = js_divergence(cur, ref)
                findings.measured[(column, comparator)] = divergence
                if divergence > limit:
                    findings.anomalies.append(
                        Anomaly(
                            column,
                            kind,
                            (
                                f"{column}: {kind} {against} (Jensen-Shannon divergence {divergence:.3f} > {limit}; "
                                f"median {ref['quantiles'][len(ref['quantiles']) // 2]:g} -> "
                                f"{cur['quantiles'][len(cur['quantiles']) // 2]:g})"
                            ),
                            comparator,
                        )
                    )
        jump = feature.get("null_rate_jump")
        if jump is not None:
            was, now = ref["null_fraction"], cur["null_fraction"]
            findings.measured[(column, "null_rate_jump")] = now - was
            if now - was > jump and _z(now, n_cur, was, n_ref) > NOISE_Z:  # more nulls; fewer is no fault
                findings.anomalies.append(
                    Anomaly(
                        column,
                        "presence",
                        (
                            f"{column}: null share {_pct(was)} -> {_pct(now)} {against} (a change of at most "
                            f"{jump} allowed)"
                        ),
                        "null_rate_jump",
                    )
                )
    if too_few:
        findings.notes.append(
            f"numeric {kind} not judged {against}: fewer than {MIN_VALUES_FOR_JS} values on a side "
            f"for {', '.join(too_few)}"
        )
    label, label_cur, label_ref = schema.get("label"), current.get("label"), reference.get("label")
    limit = threshold(label, comparator) if label else None
    if limit is not None and label_cur and label_ref:
        findings.extend(
            _label_moves(label["name"], label_cur, n_cur, label_ref, n_ref, limit, kind, comparator, against)
        )
    return findings


def _label_moves(
    name: str,
    current: dict,
    n_cur: int,
    reference: dict,
    n_ref: int,
    limit: float,
    kind: str,
    comparator: str,
    against: str,
) -> Findings:
    """The label's base rate against the reference's; and, for drift, each month of the set against
    the set's own rate (a label that changed meaning in part of a window: the base rate grows
    year on year, so a month is judged against its own window, not against the year before).
    Both are judged by the one threshold, and what an accepted change raises it to covers both."""
    findings = Findings()
    was, now = reference["base_rate"], current["base_rate"]
    moves = [abs(now - was)]
    if abs(now - was) > limit and _z(now, n_cur, was, n_ref) > NOISE_Z:
        findings.anomalies.append(
            Anomaly(
                name,
                kind,
                (
                    f"{name}: the label's base rate moved {_pct(was)} -> {_pct(now)} {against} "
                    f"(a change of at most {limit} allowed)"
                ),
                comparator,
            )
        )
    months = (
        {
            month: (rows, positives / rows)
            for month, (rows, positives) in sorted(current.get("by_month", {}).items())
            if rows
        }
        if kind == "drift"
        else {}
    )
    if len(months) > 1:
        moves += [abs(rate - now) for _, rate in months.values()]
        apart = {
            month: rate
            for month, (rows, rate) in months.items()
            if abs(rate - now) > limit and _z(rate, rows, now, n_cur) > NOISE_Z
        }
        if apart:
            shown = ", ".join(f"{month} {_pct(rate)}" for month, rate in apart.items())
            findings.anomalies.append(
                Anomaly(
                    name,
                    kind,
                    (
                        f"{name}: the label's base rate differs in part of the window: {shown}, against {_pct(now)} "
                        f"over the window (a difference of at most {limit} allowed)"
                    ),
                    comparator,
                )
            )
    findings.measured[(name, comparator)] = max(moves)
    return findings


def validate_statistics(
    statistics: dict, schema: dict, reference: dict | None = None, reference_name: str = "the previous window"
) -> Findings:
    """Every anomaly of a window (generate_statistics: its splits and all) against the schema, its
    drift against `reference` (a dataset_statistics) and the skew between its train and eval splits."""
    findings = Findings(anomalies=check_schema(statistics["all"], schema))
    if reference is not None:
        findings.extend(compare(statistics["all"], reference, schema, "drift_comparator", f"against {reference_name}"))
    splits = statistics["splits"]
    if "train" in splits and "eval" in splits:
        findings.extend(
            compare(splits["eval"], splits["train"], schema, "skew_comparator", "between the train and eval splits")
        )
    return findings
