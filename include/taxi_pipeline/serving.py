"""Where served models live: TF-Serving's `<serving_root>/<model_name>/<version>/` layout."""
from __future__ import annotations


def model_name(variant: str) -> str:
    """The served model of a variant (TF-Serving model names are path segments)."""
    return f"taxi_{variant}"


def model_base_path(serving_root: str, variant: str) -> str:
    return f"{serving_root.rstrip('/')}/{model_name(variant)}"
