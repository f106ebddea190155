"""taxi_serving_rollback: point serving back at an earlier version of a model, on demand.

Trigger it with the model, the target version (`previous`: the blessed version before the one in
service, or a version number such as 201601010000) and why. Newer versions are retired (kept under
`<model>/.retired/`, not deleted), the model's labels (`stable`) move to the target, `models.config`
is rewritten and the rollback is recorded with its reason in `<model>/rollbacks.json`; the model server
picks the change up on its next poll. On the gcp platform the Vertex AI endpoint's traffic moves back to
the target version too. A rerun with the same target changes nothing.

The next daily run's push serves a newer window again (a fix-forward); roll back again if needed.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from taxi_model.variants import VARIANTS
from taxi_pipeline.dag_defaults import DEFAULT_ARGS
from taxi_pipeline.platforms import get_platform
from taxi_pipeline.platforms.extra_links import ServedModelLink
from taxi_pipeline.serving_root import CHAMPION_MODEL, PREVIOUS, model_name

platform = get_platform()

with DAG(
    dag_id="taxi_serving_rollback",
    schedule=None,
    start_date=datetime(2014, 1, 1),
    max_active_runs=1,
    tags=["taxi", "serving", "on-call", f"platform:{platform.name}"],
    doc_md=__doc__,
    default_args={**DEFAULT_ARGS, "retries": 1},  # idempotent; a bad target fails at once (no retry)
    params={
        "model": Param(
            CHAMPION_MODEL,
            type="string",
            enum=[CHAMPION_MODEL, *(model_name(v) for v in VARIANTS)],
            description="The served model to roll back (`taxi` is what clients use, at label `stable`).",
        ),
        "target_version": Param(
            PREVIOUS,
            type="string",
            pattern=rf"^({PREVIOUS}|[0-9]{{12}})$",
            description="`previous` (the blessed version before the one in service) or a version number YYYYMMDDHHMM.",
        ),
        "reason": Param(
            "",
            type="string",
            minLength=10,
            description="Why (recorded with the rollback), e.g. the incident or the bad metric.",
        ),
    },
) as dag:
    roll_back = platform.roll_back()
    roll_back.operator_extra_links = [*roll_back.operator_extra_links, ServedModelLink()]
