"""Static HTML reports of a run, for people: plots as inline SVG (matplotlib), no internet needed.

    data.html   the run's windows: rows per split, per-feature summaries, missing values, drift of
                the key features against the reference window (histogram overlays), the validation verdict
    model.html  each model's TFMA metrics overall and per slice, calibration, confusion matrix,
                candidate vs served baseline, the blessing verdict; the variant (or window) comparison;
                for taxi_sliding_window the history of recent-vs-long verdicts as a line chart

Written under the run's `reports/` (taxi_pipeline.layout) by the report tasks, each file atomically.
Reads through fsspec, so the same code reads a local artifact root or a `gs://` one.
"""
