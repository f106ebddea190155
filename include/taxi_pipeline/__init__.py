"""Airflow-side logic of taxi-mlops: settings, windows, artifact layout, warehouse, validation.

Nothing here imports TensorFlow; heavy libraries (duckdb, pandas, great_expectations) are imported
inside the functions that need them so that DAG files stay cheap to parse.
"""
