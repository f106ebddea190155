"""The window SQL: loaded from sql/*.sql (BigQuery dialect) and translated for DuckDB.

BigQuery runs the text as written. The local platform translates it with sqlglot plus one fix
sqlglot does not make: BigQuery's DAYOFWEEK is 1 (Sunday) to 7, DuckDB's is 0 to 6.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from taxi_model.columns import RAW_COLUMN_NAMES

SQL_DIR = Path(__file__).with_name("sql")
BIGQUERY_SOURCE_TABLE = "`bigquery-public-data.chicago_taxi_trips.taxi_trips`"
LOCAL_SOURCE_TABLE = "chicago_taxi_trips.taxi_trips"
# The columns the window query returns, in order: the contract with the ML runtime's CSV reader.
WINDOW_COLUMNS = RAW_COLUMN_NAMES


@cache
def bigquery_sql(name: str, source_table: str = BIGQUERY_SOURCE_TABLE) -> str:
    """The query `sql/{name}.sql` as BigQuery runs it."""
    return (SQL_DIR / f"{name}.sql").read_text().replace("{source_table}", source_table)


@cache
def duckdb_sql(name: str, source_table: str = LOCAL_SOURCE_TABLE) -> str:
    """The same query translated to DuckDB; parameters become `$window_start` etc."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(bigquery_sql(name, source_table), read="bigquery")

    def bigquery_dayofweek(node):
        if isinstance(node, exp.Extract) and node.name.upper() == "DAYOFWEEK":
            return exp.Paren(this=exp.Add(this=node.copy(), expression=exp.Literal.number(1)))
        return node

    return tree.transform(bigquery_dayofweek).sql(dialect="duckdb", pretty=True)
