"""TF-Serving's layout of a model base path, the one rule both environments read it by.

    <base_path>/<version>/saved_model.pb   a served version: a numeric folder holding a SavedModel
    <base_path>/.retired/<version>/         a version a rollback took out of service (hidden: ignored)

A version folder without `saved_model.pb` is not a version yet (a push writes it last) or any more
(a retirement deletes it first). Pure Python, so the Airflow side (taxi_pipeline.serving_root, over
its file API), the model evaluation (tf.io.gfile) and the model server (os) share it, each passing
its own way to list a folder and test a file. (The model server finds versions by TF-Serving's own
rule, any int64-named folder, in taxi_model.serving.repository: it stands in for TF-Serving, which
would try to load an incomplete folder too; the deployment never lets it see one in models.config.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

SAVED_MODEL = "saved_model.pb"
RETIRED = ".retired"


def versions_in(base_path: str, list_names: Callable[[str], Iterable[str]], exists: Callable[[str], bool]) -> list[int]:
    """The complete versions under a model base path, oldest first (none if it does not exist).
    `list_names(folder)`: the names of its entries (a trailing '/' is allowed); `exists(file)`."""
    base = base_path.rstrip("/")
    try:
        names = [name.rstrip("/").rsplit("/", 1)[-1] for name in list_names(base)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(name) for name in set(names) if name.isdigit() and exists(f"{base}/{name}/{SAVED_MODEL}"))


def newest_before(versions: Iterable[int], before: int | None) -> int | None:
    """The newest of `versions` older than `before` (any, when None): the model in service for a run."""
    older = [v for v in versions if before is None or v < before]
    return max(older) if older else None
